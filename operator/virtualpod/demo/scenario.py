"""`virtualpod demo`: the whole mission in a minute, on whatever this machine has.

It runs the real operator (the Kopf handlers, in this process) and the real pressure
monitor, against:

* **libvirt**: real libvirtd + QEMU (`qemu:///system`) when it answers, else libvirt's
  in-process test driver (`test:///default`) -- and says which;
* **Kubernetes**: the cluster of `--kubeconfig` (or of the current kubeconfig) when it
  is reachable and has the VirtualPod CRD, else the in-process emulated API
  (`virtualpod.testing`) on 127.0.0.1 -- and says which.

It applies one VirtualPod per QoS class (`manifests/demo/`), prints what libvirt holds
for each VM (read back from the domain, not from the plan), then puts the VM pool under
pressure (`cotenant`) and prints a timeline and a summary that tests assert on
(`timeline`). It removes everything it created -- VirtualPods, domains, managed-save
images, the namespace it made -- also on Ctrl-C or failure.

The demo's VirtualPods carry `spec.nodeName` set to a host name of the demo's own, so an
operator already serving that cluster leaves them alone (`core.binding.serves`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from typing import TextIO

from virtualpod.core.qos import QOSClass
from virtualpod.core.settings import Settings, SettingsError
from virtualpod.demo.cotenant import CoTenant, PressureLoop
from virtualpod.demo.environment import (
    DOMAIN_PREFIX,
    NAMESPACE,
    QEMU_URI,
    DemoVM,
    choose_cluster,
    choose_libvirt,
    demo_manifest_dir,
    demo_settings,
    load_demo_vms,
)
from virtualpod.demo.output import Clock, DemoError, say
from virtualpod.demo.timeline import Outcome, print_timeline, summary
from virtualpod.demo.views import phases, print_vm_table, status_of
from virtualpod.demo.workload import WorkloadDemo
from virtualpod.libvirt.hypervisor import Hypervisor, HypervisorError
from virtualpod.testing import (
    ApiRequestError,
    KubeClient,
    WaitTimeoutError,
    async_wait_for,
    running_operator,
    serve_emulator,
)

#: Upper bounds for each stage; the whole demo stays well under three minutes.
OPERATOR_START_TIMEOUT_S = 30.0
RUNNING_TIMEOUT_S = 60.0
CLEANUP_TIMEOUT_S = 45.0
#: What ends the demo with "demo failed: ..." (exit 1) rather than a traceback.
FAILURES = (DemoError, SettingsError, ApiRequestError, WaitTimeoutError)
#: Loggers that would talk over the demo's own output.
NOISY_LOGGERS = ("kopf", "virtualpod.kube", "aiohttp")


async def remove_domains(hv: Hypervisor, out: TextIO, why: str) -> None:
    """Undefine the demo's domains (destroying them, dropping managed-save images)."""
    for info in await hv.list_domains():
        if info.name.startswith(DOMAIN_PREFIX):
            await hv.undefine(info.uuid)
            say(out, f"removed domain {info.name} {why} (and any managed-save image)")


async def cleanup(
    api: KubeClient, hv: Hypervisor, vms: list[DemoVM], outcome: Outcome, out: TextIO
) -> None:
    """Remove what the demo created; runs on success, failure and Ctrl-C alike.

    Deleting goes through the operator (its finalizer undefines the domain); whatever
    is left after that -- the operator died, libvirt refused -- is removed directly.
    """
    for vm in vms:
        with contextlib.suppress(Exception):
            await api.delete(NAMESPACE, vm.name)

    async def gone() -> bool:
        for vm in vms:
            with contextlib.suppress(Exception):
                if await api.get(NAMESPACE, vm.name) is not None:
                    return False
        return True

    try:
        await async_wait_for(
            gone, CLEANUP_TIMEOUT_S, interval=0.1, what="the operator to delete the VirtualPods"
        )
        say(out, "deleted the VirtualPods (the operator destroyed and undefined their VMs)")
    except WaitTimeoutError as error:
        say(out, f"warning: {error}; removing finalizers and domains directly")
        for vm in vms:
            with contextlib.suppress(Exception):
                await api.drop_finalizers(NAMESPACE, vm.name)
    try:
        await remove_domains(hv, out, "the operator left behind")
        ours = [i for i in await hv.list_domains() if i.name.startswith(DOMAIN_PREFIX)]
        outcome.domains_left = len(ours)
        outcome.running_left = sum(1 for info in ours if info.active)
    except HypervisorError as error:
        say(out, f"warning: cannot list or remove domains: {error.message}")


async def delete_namespace(api: KubeClient, out: TextIO) -> None:
    with contextlib.suppress(Exception):
        await api.delete_namespace(NAMESPACE)
        say(out, f"deleted namespace {NAMESPACE} (the demo created it)")


async def apply_and_show(
    api: KubeClient,
    hv: Hypervisor,
    settings: Settings,
    vms: list[DemoVM],
    outcome: Outcome,
    clock: Clock,
    out: TextIO,
) -> None:
    """Create one VirtualPod per QoS class, wait for them to run, show them in libvirt."""
    say(out)
    say(out, f"== applying one VirtualPod per QoS class (manifests/demo/, namespace {NAMESPACE})")
    for vm in vms:
        await api.create(vm.manifest)
        say(out, f"{clock.stamp()} created virtualpod/{vm.name}")

    async def all_running() -> bool:
        return all(phase == "Running" for phase in (await phases(api, vms)).values())

    await async_wait_for(
        all_running, RUNNING_TIMEOUT_S, interval=0.1, what="every demo VirtualPod to be Running"
    )
    for vm in vms:
        status = await status_of(api, vm)
        vm.qos = QOSClass(status["qosClass"])
        vm.uuid = status["vm"]["uuid"]
        outcome.created.append(vm.qos)
    say(out, f"{clock.stamp()} all Running")
    say(out)
    await print_vm_table(api, hv, settings, vms, out)


async def run_demo(args: argparse.Namespace, out: TextIO, outcome: Outcome) -> Outcome:
    clock = Clock()
    directory = demo_manifest_dir()
    say(out, "== virtualpod demo: VMs sized from containers, tuned by QoS, suspended in order")
    uri = await choose_libvirt(args.libvirt_uri, out)
    cluster = await choose_cluster(args.kubeconfig, out)
    settings = demo_settings(args, directory, uri)
    if uri == QEMU_URI:
        say(
            out,
            f"guests: diskless {settings.domain_type} VMs for the pressure story (they idle "
            "in firmware), then one that boots an image and runs its command",
        )
    async with contextlib.AsyncExitStack() as stack:
        if cluster is None:
            url, emulator = await stack.enter_async_context(serve_emulator())
            api, api_url = KubeClient(url), url
            say(out, f"kubernetes: emulated API serving on {url}")
        else:
            emulator, api, api_url = None, cluster.client, None
            os.environ["KUBECONFIG"] = cluster.kubeconfig  # for kopf's login
        stack.push_async_callback(api.close)
        hv = await stack.enter_async_context(Hypervisor(uri))
        vms = load_demo_vms(directory, settings.host_name)
        await remove_domains(hv, out, "left over from an earlier run")
        if await api.ensure_namespace(NAMESPACE) and cluster is not None:
            stack.push_async_callback(delete_namespace, api, out)

        loop = PressureLoop(settings, clock, out, measured_rss=not uri.startswith("test:"))
        await stack.enter_async_context(
            running_operator(
                settings,
                api_url=api_url,
                emulator=emulator,
                on_ready=[loop.start],
                timeout=OPERATOR_START_TIMEOUT_S,
            )
        )
        # Runs before the operator stops: deleting goes through its finalizer.
        stack.push_async_callback(cleanup, api, hv, vms, outcome, out)
        stack.push_async_callback(loop.close)
        if loop.monitor is None or loop.reporter is None:
            raise DemoError("the operator did not start the pressure monitor")
        outcome.pool = loop.pool
        say(out, f"operator: running in this process as host {settings.host_name}")

        await apply_and_show(api, hv, settings, vms, outcome, clock, out)
        await CoTenant(api, hv, vms, loop, clock, out).play()
        outcome.actions = list(loop.reporter.actions)
        outcome.guaranteed_suspended = any(
            a.qos is QOSClass.GUARANTEED and a.what == "suspended" for a in outcome.actions
        )
        # The pressure story is over: its VMs and monitor go before the workload VM comes.
        say(out)
        say(out, "== cleaning up the pressure story")
        await cleanup(api, hv, vms, outcome, out)
        await loop.close()
        workload = WorkloadDemo(api, api_url, emulator, hv, settings, clock, out)
        try:
            await workload.play(directory)
        finally:
            outcome.workload = workload.result
        say(out)
        say(out, "== cleaning up")
    return outcome


def take_signals() -> None:
    """Ctrl-C and SIGTERM cancel the demo's main task, once, so that it cleans up
    (through the operator, which is stopped by its stop flag afterwards)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is None:
        return

    def cancel_once() -> None:
        if not task.cancelling():
            task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, cancel_once)


def print_report(outcome: Outcome, out: TextIO) -> None:
    say(out)
    say(out, "== timeline (seconds since the demo started)")
    print_timeline(outcome, out)
    say(out)
    say(out, "== summary")
    for line in summary(outcome):
        say(out, line)


def cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`virtualpod demo`: exit 0 when every step worked, 1 on failure, 130 on Ctrl-C."""
    logging.basicConfig(
        level=logging.WARNING, stream=err, format="%(levelname)s %(name)s: %(message)s"
    )
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.ERROR)
    outcome = Outcome()

    async def main() -> Outcome:
        take_signals()
        return await run_demo(args, out, outcome)

    try:
        asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        if outcome.domains_left == 0:
            err.write("demo interrupted; everything it created was removed\n")
        else:
            err.write("demo interrupted; cleanup incomplete (see above)\n")
        return 130
    except FAILURES as error:
        err.write(f"demo failed: {error}\n")
        return 1
    print_report(outcome, out)
    ok = (
        outcome.created == [QOSClass.BEST_EFFORT, QOSClass.BURSTABLE, QOSClass.GUARANTEED]
        and outcome.domains_left == 0
        and outcome.running_left == 0
    )
    return 0 if ok else 1
