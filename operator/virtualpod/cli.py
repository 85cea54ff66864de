"""`virtualpod` command line: `plan` (offline), `run` (the operator), `logs`, `demo`."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from virtualpod.core.host_paths import host_files
from virtualpod.core.plan import VMPlan, plan_virtualpod
from virtualpod.core.quantity import format_bytes, format_cpu
from virtualpod.core.settings import Settings, SettingsError, load_settings
from virtualpod.core.spec import KIND, SpecError


@dataclass(frozen=True)
class PlanFailure:
    """One object of one file that could not be planned."""

    source: str
    what: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.what}: {self.message}"


def _documents(path: str) -> Iterator[tuple[int, object]]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    for index, document in enumerate(yaml.safe_load_all(text)):
        if document is not None:
            yield index, document


#: A name or namespace shown as given in a message: one word of at most 253 characters.
_SHOWABLE = re.compile(r"[A-Za-z0-9._-]{1,253}")


def _describe(document: object, index: int) -> str:
    """`VirtualPod NS/NAME` when both read as names, else the document's position."""
    metadata = document.get("metadata") if isinstance(document, dict) else None
    if isinstance(metadata, dict):
        name, namespace = metadata.get("name"), metadata.get("namespace") or "default"
        if all(isinstance(v, str) and _SHOWABLE.fullmatch(v) for v in (name, namespace)):
            return f"VirtualPod {namespace}/{name}"
    return f"VirtualPod (document {index + 1})"


def plan_files(
    paths: Sequence[str], settings: Settings, cgroup_version: int = 1
) -> tuple[list[VMPlan], list[PlanFailure]]:
    """Plan every VirtualPod in the files; other kinds are skipped, failures collected."""
    plans: list[VMPlan] = []
    failures: list[PlanFailure] = []
    for path in paths:
        found = 0
        try:
            documents = list(_documents(path))
        except OSError as error:
            failures.append(PlanFailure(path, "file", f"cannot read: {error.strerror}"))
            continue
        except UnicodeDecodeError:
            failures.append(PlanFailure(path, "file", "not UTF-8 text"))
            continue
        except (yaml.YAMLError, ValueError, RecursionError) as error:
            # safe_load raises ValueError for impossible dates, RecursionError when too deep
            failures.append(PlanFailure(path, "file", f"not valid YAML: {error}"))
            continue
        for index, document in documents:
            if not isinstance(document, dict):
                failures.append(PlanFailure(path, f"document {index + 1}", "not an object"))
                continue
            if document.get("kind") != KIND:
                continue
            found += 1
            try:
                plans.append(plan_virtualpod(document, settings, cgroup_version=cgroup_version))
            except SpecError as error:
                failures.extend(
                    PlanFailure(path, _describe(document, index), str(field_error))
                    for field_error in error.errors
                )
            except Exception as error:  # a bug: one line, never a traceback
                failures.append(
                    PlanFailure(
                        path,
                        _describe(document, index),
                        f"cannot plan: {type(error).__name__}: {error}",
                    )
                )
        if not found:
            failures.append(PlanFailure(path, "file", f"no {KIND} found"))
    return plans, failures


def host_path_notes(plans: Sequence[VMPlan]) -> list[str]:
    """`plan` checks host paths by name only: say so for every one it let through."""
    return [
        f"VirtualPod {plan.namespace}/{plan.name}: {field}: {path!r} is inside hostPaths.allowed "
        "by name only (plan is offline); the operator also checks the real file on the host "
        "(symlinks resolved, a regular file inside the allowed directory)"
        for plan in plans
        for field, path in host_files(plan.pod)
    ]


def plan_json(plan: VMPlan) -> dict[str, Any]:
    return {
        "name": plan.name,
        "namespace": plan.namespace,
        "qosClass": plan.qos_class.value,
        "priority": plan.priority,
        "suspendMode": plan.suspend_mode.value,
        "vcpus": plan.size.vcpus,
        "memoryBytes": plan.size.memory_bytes,
        "requests": {
            "cpu": format_cpu(plan.requests.cpu_millis),
            "memory": format_bytes(plan.requests.memory_bytes),
        },
        "cputune": {
            "shares": plan.cputune.shares,
            "globalPeriod": plan.cputune.period_us,
            "globalQuota": plan.cputune.quota_us,
        },
        "memtune": {
            "hardLimitBytes": plan.memtune.hard_limit_bytes,
            "softLimitBytes": plan.memtune.soft_limit_bytes,
        },
        "domainName": plan.domain_name,
        "uuid": plan.uuid,
        "domainXML": plan.domain_xml,
        "workload": _workload_json(plan),
    }


def _workload_json(plan: VMPlan) -> dict[str, Any] | None:
    workload = plan.workload
    if workload is None:
        return None
    return {
        "image": workload.image.location,
        "imageSHA256": workload.image.sha256,
        "network": workload.nic.network,
        "mac": workload.nic.mac,
        "rootVolume": workload.root_volume,
        "seedVolume": workload.seed_volume,
        "ephemeralStorageLimit": workload.storage_limit_bytes,
        "hostPorts": [
            {
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": p.protocol.value,
            }
            for p in workload.host_ports
        ],
    }


def _maybe_bytes(count: int | None) -> str:
    return "-" if count is None else format_bytes(count)


def plan_table(plans: Sequence[VMPlan]) -> str:
    header = ("NAMESPACE", "NAME", "QOS", "VCPUS", "MEMORY", "SHARES", "QUOTA", "HARD", "SOFT")
    rows = [header] + [
        (
            plan.namespace,
            plan.name,
            plan.qos_class.value,
            str(plan.size.vcpus),
            format_bytes(plan.size.memory_bytes),
            str(plan.cputune.shares),
            "-"
            if plan.cputune.quota_us is None
            else f"{plan.cputune.quota_us}/{plan.cputune.period_us}",
            _maybe_bytes(plan.memtune.hard_limit_bytes),
            _maybe_bytes(plan.memtune.soft_limit_bytes),
        )
        for plan in plans
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return (
        "\n".join(
            "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows
        )
        + "\n"
    )


def cmd_plan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        settings = load_settings(args.config)
    except SettingsError as error:
        err.write(f"error: {error}\n")
        return 2
    plans, failures = plan_files(args.filename, settings, cgroup_version=args.cgroup_version)
    if args.output == "json":
        out.write(json.dumps([plan_json(plan) for plan in plans], indent=2) + "\n")
    elif args.output == "xml":
        out.write("".join(plan.domain_xml for plan in plans))
    elif plans:
        out.write(plan_table(plans))
    for note in host_path_notes(plans):
        err.write(f"note: {note}\n")
    for failure in failures:
        err.write(f"error: {failure}\n")
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="virtualpod",
        description="Run pod-shaped VirtualPods as libvirt VMs sized and tuned by QoS class.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    plan = commands.add_parser(
        "plan",
        help="show the QoS class and libvirt domain XML for VirtualPods (offline)",
        description="Offline: no cluster and no libvirt needed.",
    )
    plan.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        help="YAML file with VirtualPods ('-' for stdin); repeatable",
    )
    plan.add_argument("-o", "--output", choices=("table", "json", "xml"), default="table")
    plan.add_argument("--config", help="operator settings YAML (defaults when omitted)")
    plan.add_argument(
        "--cgroup-version",
        type=int,
        choices=(1, 2),
        default=1,
        help="render <shares> for this host cgroup version (default 1)",
    )
    plan.set_defaults(handler=cmd_plan)

    _add_optional_commands(commands)
    return parser


def _add_optional_commands(commands: Any) -> None:
    """Subcommands whose modules bring in kopf/libvirt, imported only when used."""
    run = commands.add_parser("run", help="run the operator (wraps `kopf run`)")
    run.add_argument("--config", help="operator settings YAML")
    run.add_argument("--libvirt-uri", help="override settings.libvirtURI")
    run.add_argument("--host-name", help="override settings.hostName")
    run.add_argument(
        "--role",
        choices=("all", "controller", "agent"),
        default="all",
        help="controller: one per cluster (a Deployment), companion Pods and binding; "
        "agent: one per libvirt host (the DaemonSet), runs the VMs bound to it; "
        "all (default): both in one process, for a single host",
    )
    run.add_argument(
        "--peering",
        help="role controller: the Kopf peering its replicas share (default: settings.peering)",
    )
    run.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="serve only these namespaces (default: all)",
    )
    run.add_argument("--standalone", action="store_true", help="no peering with other operators")
    run.add_argument(
        "--liveness", default=None, help="Kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz"
    )
    run.add_argument("--verbose", action="store_true")
    run.set_defaults(handler=_lazy("virtualpod.kube.runner", "cmd_run"))

    logs = commands.add_parser(
        "logs",
        help="print a VirtualPod's VM serial console (run on its libvirt host)",
        description="The console log the VM's domain writes: its boot and its workload's output.",
    )
    logs.add_argument("name", help="the VirtualPod's name")
    logs.add_argument("-n", "--namespace", default="default")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    logs.add_argument("--config", help="operator settings YAML (for libvirtURI)")
    logs.add_argument("--libvirt-uri", help="override settings.libvirtURI")
    logs.set_defaults(handler=_lazy("virtualpod.libvirt.console", "cmd_logs"))

    demo = commands.add_parser(
        "demo",
        help="show sizing, QoS tuning, suspension under pressure and a workload VM",
    )
    demo.add_argument("--config", help="operator settings YAML")
    demo.add_argument("--libvirt-uri", help="libvirt URI (default: real QEMU when available)")
    demo.add_argument("--kubeconfig", help="use this cluster instead of the built-in emulator")
    demo.set_defaults(handler=_lazy("virtualpod.demo.scenario", "cmd_demo"))


#: Modules that come with an extra of the package, and that extra.
EXTRA_MODULES = {"kmock": "testing"}


def _lazy(module: str, function: str) -> Any:
    def handler(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
        import importlib

        try:
            loaded = importlib.import_module(module)
        except ModuleNotFoundError as error:
            extra = EXTRA_MODULES.get(error.name or "")
            if extra is None:
                raise
            err.write(
                f"error: `virtualpod {args.command}` needs {error.name}, which comes with "
                f"an extra: pip install 'virtualpod[{extra}]'\n"
            )
            return 1
        result: int = getattr(loaded, function)(args, out, err)
        return result

    return handler


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
