"""What happened before what: a sequence number, not a time.

The loop asks "did this Save settle before that reading (or listing) began?". Those are
questions of order, so they are answered with one process-wide counter, and the only
time the pressure package reads is the monitor's injected clock (grace periods, sample
times, credit expiry).
"""

from __future__ import annotations

import itertools

_counter = itertools.count(1)

#: Before anything happened (what `tick()` never returns).
NEVER = 0


def tick() -> int:
    """The next point in the sequence (later calls return larger numbers)."""
    return next(_counter)
