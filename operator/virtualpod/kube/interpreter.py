"""How the operator process runs Python: the garbage collector's thresholds."""

from __future__ import annotations

import gc

#: Generation thresholds for an operator process. Python's default collects the young
#: generation every 700 net allocations: a few times per watch event, whose thousands
#: of short-lived objects reference counting frees anyway. Measured by
#: bench/cluster_bench.py: about a tenth less CPU per VirtualPod, a few MiB more RSS.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Raise the thresholds, and freeze what is loaded by now: it lives as long as the
    process, so no collection scans it again."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()
