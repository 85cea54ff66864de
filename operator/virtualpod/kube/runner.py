"""`virtualpod run`: the operator process (kopf with our handlers and settings).

Settings are loaded once here and travel in kopf's memo, so every handler sees the
same values; the command-line flags override the settings file. When the pressure
monitor module is present it is started once libvirt is connected, with a reporter
that turns its actions into status and Events.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import replace
from typing import Any, TextIO

import kopf

from virtualpod.core.settings import Settings, SettingsError, load_settings

log = logging.getLogger(__name__)


def effective_settings(args: argparse.Namespace) -> Settings:
    """The settings file (or defaults) with the command-line overrides applied."""
    settings = load_settings(getattr(args, "config", None))
    if getattr(args, "libvirt_uri", None):
        settings = replace(settings, libvirt_uri=args.libvirt_uri)
    if getattr(args, "host_name", None):
        settings = replace(settings, host_name=args.host_name)
    return settings


def pressure_hook(ctx: Any) -> Any:
    """`OperatorContext.on_ready` hook: the pressure monitor's loop, as a coroutine."""
    return run_pressure_monitor(ctx)


async def run_pressure_monitor(ctx: Any) -> None:
    """Sample host memory and suspend/resume VMs in QoS order (`virtualpod.pressure.monitor`)."""
    from virtualpod.kube.handlers import PressureReporter
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


def build_memo(settings: Settings, *, api_url: str | None = None, pressure: bool = True) -> Any:
    """The kopf memo for one operator: our context, with the pressure monitor wired in."""
    from virtualpod.kube.handlers import make_memo

    memo = make_memo(settings, api_url=api_url)
    if pressure:
        memo.ctx.on_ready.append(pressure_hook)
    return memo


async def run_operator(
    settings: Settings,
    *,
    namespaces: list[str] | None = None,
    standalone: bool = True,
    liveness: str | None = None,
    api_url: str | None = None,
    stop_flag: Any = None,
    ready_flag: Any = None,
    pressure: bool = True,
) -> None:
    """Run the operator in the current event loop until stopped (`virtualpod run`)."""
    import virtualpod.kube.handlers  # noqa: F401  (registers the handlers)

    await kopf.operator(
        clusterwide=not namespaces,
        namespaces=namespaces or (),
        standalone=standalone,
        liveness_endpoint=liveness,
        memo=build_memo(settings, api_url=api_url, pressure=pressure),
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
    out.write(
        f"virtualpod operator: libvirt {settings.libvirt_uri}, host "
        f"{settings.host_name or '(system hostname)'}, "
        f"namespaces {', '.join(args.namespace) if args.namespace else 'all'}\n"
    )
    out.flush()
    try:
        asyncio.run(
            run_operator(
                settings,
                namespaces=list(args.namespace),
                standalone=args.standalone,
                liveness=args.liveness,
            )
        )
    except KeyboardInterrupt:
        return 130
    return 0
