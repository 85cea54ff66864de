"""Waiting on conditions with a deadline: the only synchronization tests may use."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from virtualpod.testing.waiting import WaitTimeoutError, async_wait_for

__all__ = ["WaitTimeoutError", "async_wait_for", "wait_for"]

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Call `probe` until it returns something truthy; return that, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last = probe()
    while not last:
        if time.monotonic() > deadline:
            raise WaitTimeoutError(
                f"timed out after {timeout:g}s waiting for {what or probe!r}: {last!r}"
            )
        time.sleep(interval)
        last = probe()
    return last
