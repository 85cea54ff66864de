"""Restarting a VM that stopped outside the operator: kubelet's crash-loop back-off.

A VirtualPod behaves like a pod with `restartPolicy: Always`: a crashed or externally
destroyed VM is started again, at once the first time, then after `initial` doubling up
to `max`; a VM that ran for `reset` since its last restart starts over.
"""

from __future__ import annotations

from virtualpod.core.settings import RestartBackoff


def restart_delay(backoff: RestartBackoff, streak: int) -> float:
    """Seconds to wait before the restart that follows `streak` quick restarts."""
    if streak <= 0:
        return 0.0
    return float(min(backoff.max_s, backoff.initial_s * 2 ** (streak - 1)))


def crash_loop_over(backoff: RestartBackoff, ran_for_s: float) -> bool:
    """A VM that ran at least `reset` since its last restart is not crash-looping."""
    return ran_for_s >= backoff.reset_s


def needs_restart(
    *, stopped: bool, has_managed_save: bool, placed: bool, suspended: bool, deleting: bool
) -> bool:
    """Restart policy Always: a VM shut off or crashed with nothing to restore.

    Not a VM with a managed-save image (the pressure monitor's or an admin's), nor one
    the pressure monitor holds, nor one being deleted, nor one never placed here.
    """
    return stopped and not has_managed_save and placed and not suspended and not deleting
