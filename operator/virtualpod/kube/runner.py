"""`virtualpod run`: the operator process (kopf with our handlers and settings).

Settings are loaded once here and travel in kopf's memo, so every handler sees the
same values; the command-line flags override the settings file. `--role` picks the
handlers, registered onto an explicit Kopf registry: `controller` (companion Pods and
binding; no libvirt; its replicas peer so one is active), `agent` (one per libvirt host,
standalone) or `all` (both, for a single host). The agent starts the pressure monitor once
libvirt is connected, with a reporter that turns its actions into status and Events.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any, TextIO

import kopf

from virtualpod.core.settings import Settings, SettingsError, load_settings
from virtualpod.kube import agent, common, controller
from virtualpod.kube.context import AgentContext, Role, context, make_memo
from virtualpod.kube.interpreter import tune_gc

log = logging.getLogger(__name__)

#: Kopf peering priorities the controller's replicas draw from (1..2**31-1).
PEERING_PRIORITIES = 2**31 - 1


def effective_settings(args: argparse.Namespace) -> Settings:
    """The settings file (or defaults) with the command-line overrides applied."""
    settings = load_settings(getattr(args, "config", None))
    if getattr(args, "libvirt_uri", None):
        settings = replace(settings, libvirt_uri=args.libvirt_uri)
    if getattr(args, "host_name", None):
        settings = replace(settings, host_name=args.host_name)
    return settings


def pressure_hook(ctx: AgentContext) -> Awaitable[None]:
    """`AgentContext.on_ready` hook: the pressure monitor's loop, as a coroutine."""
    return run_pressure_monitor(ctx)


async def run_pressure_monitor(ctx: AgentContext) -> None:
    """Sample host memory and suspend/resume VMs in QoS order (`virtualpod.pressure.monitor`)."""
    from virtualpod.kube.pressure_reporter import PressureReporter
    from virtualpod.libvirt.hypervisor import HypervisorError
    from virtualpod.pressure.monitor import Inventory, Monitor, signal_from_settings

    inventory = Inventory(ctx.hv)
    # The pool's allocatable: `eviction.poolAllocatable` when set, else what admission
    # uses (host capacity as libvirt reports it, minus `reserved`).
    configured = ctx.settings.eviction.pool_allocatable_bytes
    try:
        signal = await signal_from_settings(
            ctx.settings,
            ctx.hv,
            inventory,
            allocatable_bytes=ctx.allocatable.memory_bytes if configured is None else None,
        )
        await signal.read()
    except HypervisorError as error:
        log.warning(f"pressure monitor not started: no memory signal on {ctx.hv.uri}: {error}")
        return
    monitor = Monitor(ctx.hv, signal, PressureReporter(ctx), ctx.settings, inventory=inventory)
    ctx.pressure = monitor
    await monitor.reconcile()
    await monitor.run()


def build_memo(
    settings: Settings,
    role: Role = Role.ALL,
    *,
    api_url: str | None = None,
    pressure: bool = True,
) -> kopf.Memo:
    """The kopf memo for one operator: our context, with the pressure monitor wired in."""
    memo = make_memo(settings, role, api_url=api_url)
    if pressure:
        context(memo).on_ready.append(pressure_hook)
    if role in (Role.CONTROLLER, Role.ALL):
        # One host: its companion Pods are bound to it directly, no scheduler needed.
        bind_to = context(memo).host_name if role is Role.ALL else None
        controller.add_to_memo(memo, settings, bind_to=bind_to)
    return memo


def build_registry(role: Role, host_name: str) -> kopf.OperatorRegistry:
    """The handlers of a role (an agent's for `host_name`), on a registry of their own
    (nothing module-global)."""
    registry = kopf.OperatorRegistry()
    common.register(registry)
    if role in (Role.AGENT, Role.ALL):
        agent.register(registry, host_name)
    if role in (Role.CONTROLLER, Role.ALL):
        controller.register(registry, alone=role is Role.CONTROLLER)
    return registry


async def run_operator(
    settings: Settings,
    *,
    role: Role = Role.ALL,
    namespaces: list[str] | None = None,
    standalone: bool = True,
    peering: str | None = None,
    priority: int = 0,
    liveness: str | None = None,
    api_url: str | None = None,
    stop_flag: Any = None,
    ready_flag: Any = None,
    pressure: bool = True,
) -> None:
    """Run the operator in the current event loop until stopped (`virtualpod run`)."""
    memo = build_memo(settings, role, api_url=api_url, pressure=pressure)
    await kopf.operator(
        clusterwide=not namespaces,
        namespaces=namespaces or (),
        standalone=standalone,
        peering_name=None if standalone else peering,
        priority=priority,
        liveness_endpoint=liveness,
        registry=build_registry(role, context(memo).host_name),
        memo=memo,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Entry point of `virtualpod run`."""
    try:
        settings = effective_settings(args)
    except SettingsError as error:
        err.write(f"error: {error}\n")
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    role = Role(getattr(args, "role", Role.ALL.value))
    if role is not Role.ALL and not args.verbose:
        # Kopf says "Handler ... succeeded." at INFO for every watch event it hands to the
        # controller (each change of every VirtualPod and Pod) and for every change an
        # agent handles; in a cluster, what either has to say about an object is an Event
        # or a warning. One host (role all, the demo) keeps Kopf's account.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    out.write(
        f"virtualpod operator: libvirt {settings.libvirt_uri}, host "
        f"{settings.host_name or '(system hostname)'}, "
        f"namespaces {', '.join(args.namespace) if args.namespace else 'all'}, role {role.value}\n"
    )
    out.flush()
    tune_gc()
    try:
        asyncio.run(
            run_operator(
                settings,
                role=role,
                namespaces=list(args.namespace),
                standalone=args.standalone or role is Role.AGENT,
                # The controller's replicas peer so that one of them is active.
                peering=(args.peering or settings.peering) if role is Role.CONTROLLER else None,
                # Peers of equal priority all pause: each replica draws its own.
                priority=secrets.randbelow(PEERING_PRIORITIES) + 1,
                liveness=args.liveness,
            )
        )
    except KeyboardInterrupt:
        return 130
    return 0
