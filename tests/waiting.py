"""Waiting on conditions with a deadline: the only synchronization tests may use."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeoutError(AssertionError):
    pass


def wait_for(
    probe: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Call `probe` until it returns something truthy; return that, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T = probe()
    while not last:
        if time.monotonic() > deadline:
            raise WaitTimeoutError(
                f"timed out after {timeout}s waiting for {what or probe!r}: {last!r}"
            )
        time.sleep(interval)
        last = probe()
    return last


async def async_wait_for(
    probe: Callable[[], Awaitable[T]], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Async twin of `wait_for` for probes that must await."""
    deadline = time.monotonic() + timeout
    last = await probe()
    while not last:
        if time.monotonic() > deadline:
            raise WaitTimeoutError(
                f"timed out after {timeout}s waiting for {what or probe!r}: {last!r}"
            )
        await asyncio.sleep(interval)
        last = await probe()
    return last
