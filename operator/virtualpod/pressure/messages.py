"""The words of the pressure loop: Event reasons and the messages people read.

Pure text from numbers, kept apart so the loop reads as decisions and the wording can
be tested (and changed) in one place.
"""

from __future__ import annotations

from virtualpod.core.quantity import MIB
from virtualpod.core.spec import SuspendMode

#: Event reason of a suspension for memory pressure.
MEMORY_PRESSURE = "MemoryPressure"
#: Event reason of a VM found saved that the loop did not save.
SAVED_OUTSIDE = "Saved"


def mib(value: int | None) -> str:
    """Rounded MiB for messages (`format_bytes` is exact, and so too long for them)."""
    return "?" if value is None else f"{value / MIB:.0f}Mi"


def signal_message(
    source: str,
    available_bytes: int | None,
    reason: str,
    threshold_bytes: int,
    needed_bytes: int,
    psi_some_avg10: float | None = None,
) -> str:
    psi = "" if psi_some_avg10 is None else f", PSI some avg10 {psi_some_avg10:.1f}%"
    return (
        f"{source} memory.available {mib(available_bytes)} < "
        f"{reason} {mib(threshold_bytes)}{psi}; need {mib(needed_bytes)}"
    )


def suspended_message(
    message: str, mode: SuspendMode, seconds: float, released_bytes: int | None
) -> str:
    if mode is SuspendMode.SAVE:
        return f"{message}; {mode.value} took {seconds:.2f}s, released {mib(released_bytes)}"
    return f"{message}; paused (Pause keeps the VM's memory)"


def resume_message(
    source: str,
    available_bytes: int | None,
    needed_bytes: int,
    threshold_bytes: int,
    margin_bytes: int,
) -> str:
    return (
        f"memory pressure over: {source} memory.available {mib(available_bytes)}, "
        f"{mib(needed_bytes)} needed, threshold {mib(threshold_bytes)} + margin "
        f"{mib(margin_bytes)} still free after resume"
    )


def ballooned_message(target_bytes: int, reclaim_bytes: int) -> str:
    return f"ballooned to its request {mib(target_bytes)} to free ~{mib(reclaim_bytes)}"


def guaranteed_only_message(message: str, shortfall_bytes: int) -> str:
    return (
        f"{message}; only Guaranteed VMs are left running and they are never "
        f"suspended for host pressure: {mib(shortfall_bytes)} short"
    )


def still_suspended_message(message: str) -> str:
    return f"still suspended after an operator restart; {message}"


def running_again_message(rolled_back_suspend: bool) -> str:
    what = "suspend rolled back" if rolled_back_suspend else "resume completed"
    return f"{what} after an operator restart"


SAVED_OUTSIDE_MESSAGE = "saved (managed save) outside the pressure controller"
