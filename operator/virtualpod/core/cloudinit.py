"""cloud-init NoCloud seed content: meta-data and user-data from the containers.

The user-data is a shell script (cloud-init runs a user-data starting with `#!` once
per instance; a minimal init can simply execute it): init containers run one after the
other, each must succeed; then the app containers run side by side, each with its own
environment, and the script waits for them. A container without `command` and `args`
runs nothing: the image's own boot is its default. `spec.cloudInit.userData`, when
set, replaces the rendered script as is.

Env values from Secrets and ConfigMaps arrive here resolved, only when the seed is
built; nothing else in the operator ever holds them.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from virtualpod.core.spec import Container, VirtualPod
from virtualpod.core.workload import KeyRef

SEED_LABEL = "cidata"
META_DATA = "meta-data"
USER_DATA = "user-data"
SHEBANG = "#!/bin/sh"


class MissingKey(LookupError):  # noqa: N818 (reads as the condition it reports)
    """A non-optional Secret/ConfigMap key an env var refers to is not there."""

    def __init__(self, container: str, variable: str, ref: KeyRef) -> None:
        self.ref = ref
        super().__init__(
            f"container {container!r} env {variable}: {ref.kind} {ref.name!r} has no key "
            f"{ref.key!r} (or does not exist)"
        )


@dataclass(frozen=True)
class SeedFiles:
    meta_data: str
    user_data: str


def key_refs(pod: VirtualPod) -> tuple[KeyRef, ...]:
    """Every Secret/ConfigMap key the seed needs, in order, without repeats."""
    refs: dict[KeyRef, None] = {}
    for container in pod.all_containers:
        for var in container.process.env:
            if var.value_from is not None:
                refs[var.value_from] = None
    return tuple(refs)


def render_meta_data(pod: VirtualPod, instance_id: str) -> str:
    """instance-id = the object's uid (a new object is a new instance), hostname = name."""
    return f"instance-id: {json.dumps(instance_id)}\nlocal-hostname: {json.dumps(pod.name)}\n"


def _environment(
    container: Container, resolved: Mapping[KeyRef, str | None]
) -> list[tuple[str, str]]:
    pairs = []
    for var in container.process.env:
        if var.value_from is None:
            pairs.append((var.name, var.value or ""))
            continue
        value = resolved.get(var.value_from)
        if value is None:
            if var.value_from.optional:
                continue  # as in a Pod: an optional missing key leaves the variable unset
            raise MissingKey(container.name, var.name, var.value_from)
        pairs.append((var.name, value))
    return pairs


def _invocation(container: Container, resolved: Mapping[KeyRef, str | None]) -> str | None:
    argv = container.process.argv
    if not argv:
        return None
    exports = "".join(
        f"export {name}={shlex.quote(value)}; " for name, value in _environment(container, resolved)
    )
    return f"( {exports}exec {shlex.join(argv)} )"


def render_user_data(pod: VirtualPod, resolved: Mapping[KeyRef, str | None]) -> str:
    """The containers as one shell script; raises MissingKey for an unresolved env var."""
    lines = [SHEBANG, f"# VirtualPod {pod.namespace}/{pod.name}: its containers, in order"]
    lines += _section(pod.init_containers, resolved, "init container", " || exit $?")
    lines += _section(pod.containers, resolved, "container", " &")
    lines.append("wait")
    return "\n".join(lines) + "\n"


def _section(
    containers: Sequence[Container],
    resolved: Mapping[KeyRef, str | None],
    label: str,
    suffix: str,
) -> list[str]:
    lines = []
    for container in containers:
        invocation = _invocation(container, resolved)
        if invocation is not None:
            lines += [f"# {label} {container.name}", invocation + suffix]
    return lines


def seed_files(
    pod: VirtualPod, instance_id: str, resolved: Mapping[KeyRef, str | None]
) -> SeedFiles:
    user_data = pod.user_data if pod.user_data is not None else render_user_data(pod, resolved)
    return SeedFiles(render_meta_data(pod, instance_id), user_data)
