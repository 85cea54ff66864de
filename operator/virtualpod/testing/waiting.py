"""Waiting on a condition with a deadline: how the tests, the bench and the demo sync."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeoutError(AssertionError):
    """The condition did not hold in time."""


async def async_wait_for(
    probe: Callable[[], Awaitable[T | None]],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "",
) -> T:
    """Await `probe()` until it returns something truthy; return that, or fail after
    `timeout` seconds. A probe answers None (or anything falsy) for "not yet"."""
    deadline = time.monotonic() + timeout
    last = await probe()
    while not last:
        if time.monotonic() > deadline:
            raise WaitTimeoutError(
                f"timed out after {timeout:g}s waiting for {what or probe!r}: {last!r}"
            )
        await asyncio.sleep(interval)
        last = await probe()
    return last
