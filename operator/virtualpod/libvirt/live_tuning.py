"""Live tuning: cpu shares and quota, memory limits and the balloon of a domain.

Applied to the running VM and its persistent definition together (only the definition
when it is shut off), so a change survives a restart. The values come from the core
(`core.tuning`); here they only become libvirt's parameters.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import libvirt

from virtualpod.core.quantity import KIB, kib_ceil
from virtualpod.core.tuning import CpuTune, MemTune, shares_for_cgroup
from virtualpod.libvirt.connection import Connection, affect_flags, apply_both, is_live
from virtualpod.libvirt.errors import HardLimitBelowUsage
from virtualpod.libvirt.stats import rss_bytes

#: libvirt's "no limit" for memtune values (VIR_DOMAIN_MEMORY_PARAM_UNLIMITED, KiB).
MEMORY_UNLIMITED_KIB = 9007199254740991
#: libvirt's "no limit" for a CFS quota.
QUOTA_UNLIMITED = -1


@dataclass(frozen=True)
class TuneResult:
    """`live` says whether the running VM changed too (else only the persistent config)."""

    live: bool
    seconds: float
    parameters: dict[str, int] = field(default_factory=dict)


def cputune_parameters(tune: CpuTune, cgroup_version: int) -> dict[str, int]:
    """Scheduler parameters for `tune`; without a quota any quota is removed."""
    params = {"cpu_shares": shares_for_cgroup(tune.shares, cgroup_version)}
    if tune.quota_us is None:
        params["global_quota"] = QUOTA_UNLIMITED
        return params
    if tune.period_us is not None:
        params["global_period"] = tune.period_us
    params["global_quota"] = tune.quota_us
    return params


def kib_or_unlimited(value_bytes: int | None) -> int:
    """memtune KiB, rounded up (the core renders the XML the same way); None: unlimited."""
    return MEMORY_UNLIMITED_KIB if value_bytes is None else kib_ceil(value_bytes)


def memtune_parameters(tune: MemTune) -> dict[str, int]:
    return {
        "hard_limit": kib_or_unlimited(tune.hard_limit_bytes),
        "soft_limit": kib_or_unlimited(tune.soft_limit_bytes),
    }


def _is_busy(e: libvirt.libvirtError) -> bool:
    """The kernel refused a memory limit below what the cgroup already uses."""
    return "busy" in (e.get_error_message() or "").lower()


class LiveTuning(Connection):
    """Change a domain's tuning live and in its persistent definition."""

    def cpu_shares_value(self, shares: int) -> int:
        """What libvirt must be given for `shares` on this host (cpu.weight on cgroup v2)."""
        return shares_for_cgroup(shares, self.cgroup_version)

    async def _tune(
        self, uuid: str, parameters: dict[str, int], apply: Callable[[Any, int], object]
    ) -> TuneResult:
        """apply(domain, flags) live and persistently, timed; the one tuning wrapper."""

        def tune(dom: Any) -> TuneResult:
            flags = affect_flags(dom)
            t0 = time.monotonic()
            apply_both(lambda f: apply(dom, f), flags)
            return TuneResult(is_live(flags), time.monotonic() - t0, dict(parameters))

        return await self._with_domain(uuid, tune)

    async def set_cputune(self, uuid: str, tune: CpuTune) -> TuneResult:
        """cpu shares and the whole-VM CFS quota (global_period/global_quota).

        A CpuTune without a quota removes any quota (unlimited).
        """
        params = cputune_parameters(tune, self.cgroup_version)
        return await self._tune(
            uuid, params, lambda dom, flags: dom.setSchedulerParametersFlags(params, flags)
        )

    async def scheduler_parameters(self, uuid: str, *, live: bool = True) -> dict[str, int]:
        flags = libvirt.VIR_DOMAIN_AFFECT_LIVE if live else libvirt.VIR_DOMAIN_AFFECT_CONFIG

        def read(dom: Any) -> dict[str, int]:
            active_flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG if not dom.isActive() else flags
            return dict(dom.schedulerParametersFlags(active_flags))

        return await self._with_domain(uuid, read)

    async def set_memtune(self, uuid: str, tune: MemTune) -> TuneResult:
        """hard_limit/soft_limit; None means unlimited. Refuses a hard_limit below RSS."""
        params = memtune_parameters(tune)
        limit = tune.hard_limit_bytes

        def apply(dom: Any, flags: int) -> None:
            if limit is not None and is_live(flags):
                rss = rss_bytes(dom)
                if rss is not None and limit < rss:
                    raise HardLimitBelowUsage(
                        f"hard_limit {limit} B is below the current RSS {rss} B of {dom.name()}",
                        limit_bytes=limit,
                        usage_bytes=rss,
                    )
            try:
                dom.setMemoryParameters(params, flags)
            except libvirt.libvirtError as e:
                if limit is None or not _is_busy(e):
                    raise
                raise HardLimitBelowUsage(
                    e.get_error_message(), limit_bytes=limit, usage_bytes=rss_bytes(dom) or 0
                ) from e

        return await self._tune(uuid, params, apply)

    async def memory_parameters(self, uuid: str) -> dict[str, int]:
        """Current memtune in KiB, as libvirt reports it (unlimited = 9007199254740991)."""
        return await self._with_domain(uuid, lambda dom: dict(dom.memoryParameters(0)))

    async def set_balloon(self, uuid: str, memory_bytes: int) -> TuneResult:
        """Balloon target (guest-visible memory); cannot exceed the maximum memory."""
        kib = memory_bytes // KIB
        return await self._tune(
            uuid, {"memory_kib": kib}, lambda dom, flags: dom.setMemoryFlags(kib, flags)
        )
