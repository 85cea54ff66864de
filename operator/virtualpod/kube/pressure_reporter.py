"""The pressure monitor's actions as the owners' status and Events (`monitor.Reporter`)."""

from __future__ import annotations

import logging

from virtualpod.core.spec import SuspendMode
from virtualpod.core.status import Suspension
from virtualpod.kube.context import AgentContext
from virtualpod.kube.mirror import refresh_quietly
from virtualpod.kube.reporters import post
from virtualpod.pressure.monitor import PressureStatus
from virtualpod.pressure.policy import VMView

log = logging.getLogger(__name__)


class StatusReporter:
    """What the pressure monitor calls when it acts: status + Events on the owner."""

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx

    async def suspended(self, uuid: str, mode: SuspendMode, reason: str, message: str) -> None:
        self.ctx.suspensions[uuid] = Suspension(mode, reason, message)
        owner = self.ctx.owner(uuid)
        if owner is not None:
            post(self.ctx, owner.ref, "Normal", "Suspended", f"{reason}: {message}")
            await refresh_quietly(self.ctx, uuid)

    async def resumed(self, uuid: str, message: str = "") -> None:
        self.ctx.suspensions.pop(uuid, None)
        owner = self.ctx.owner(uuid)
        if owner is not None:
            post(self.ctx, owner.ref, "Normal", "Resumed", message or "resumed")
            await refresh_quietly(self.ctx, uuid)

    async def failed(self, uuid: str, message: str) -> None:
        owner = self.ctx.owner(uuid)
        if owner is not None:
            post(self.ctx, owner.ref, "Warning", "Failed", message)


class PressureReporter:
    """`monitor.Reporter`: the pressure monitor's actions as status and Events."""

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self.status = StatusReporter(ctx)

    async def vm_suspending(self, vm: VMView, reason: str, message: str) -> None:
        self.ctx.suspensions[vm.key] = Suspension(vm.suspend_mode, reason, message)

    async def vm_suspended(self, vm: VMView, reason: str, message: str) -> None:
        await self.status.suspended(vm.key, vm.suspend_mode, reason, message)

    async def vm_resumed(self, vm: VMView, message: str) -> None:
        await self.status.resumed(vm.key, message)

    async def vm_ballooned(self, vm: VMView, target_bytes: int, message: str) -> None:
        owner = self.ctx.owner(vm.key)
        if owner is not None:
            post(self.ctx, owner.ref, "Normal", "Ballooned", message)

    async def action_failed(self, vm: VMView, action: str, message: str) -> None:
        await self.status.failed(vm.key, f"{action} failed: {message}")

    async def pressure_changed(self, status: PressureStatus) -> None:
        log.info(f"host {self.ctx.host_name} pressure: {status}")

    async def guaranteed_only_pressure(self, message: str) -> None:
        log.warning(f"host {self.ctx.host_name}: {message}")
