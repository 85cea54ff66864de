"""What the demo prints, and how long it has been running."""

from __future__ import annotations

import time
from typing import TextIO

from virtualpod.core.quantity import format_bytes


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why and what to do."""


def say(out: TextIO, line: str = "") -> None:
    out.write(line + "\n")
    out.flush()


def table(rows: list[tuple[str, ...]]) -> str:
    """Rows in left-aligned columns, as kubectl prints them."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def maybe_bytes(count: int | None) -> str:
    return "-" if count is None else format_bytes(count)


class Clock:
    """Seconds since the demo started: the timeline's time axis."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.start

    def stamp(self) -> str:
        return f"[{self.now():6.1f}s]"
