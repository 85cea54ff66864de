"""Which lifecycle events the agent's mirror need not read libvirt for, as a table."""

from __future__ import annotations

import pytest

from virtualpod.core.settings import Settings
from virtualpod.kube.context import Written, agent_context
from virtualpod.kube.mirror import already_mirrored
from virtualpod.libvirt.hypervisor import EventKind

UUID = "5f0c4a52-0000-4000-8000-000000000002"


@pytest.mark.parametrize(
    ("kind", "written_phase", "skipped"),
    [
        pytest.param(EventKind.STARTED, "Running", True, id="started-and-written-running"),
        pytest.param(EventKind.RESUMED, "Running", True, id="resumed-and-written-running"),
        pytest.param(EventKind.STARTED, "Pending", False, id="started-after-pending"),
        pytest.param(EventKind.RESUMED, "Paused", False, id="resumed-after-paused"),
        pytest.param(EventKind.STARTED, None, False, id="started-nothing-written-yet"),
        pytest.param(EventKind.STOPPED, "Running", False, id="stopped-is-always-read"),
        pytest.param(EventKind.CRASHED, "Running", False, id="crashed-is-always-read"),
        pytest.param(EventKind.PAUSED, "Running", False, id="paused-is-always-read"),
        pytest.param(None, "Running", False, id="reconnected-is-always-read"),
    ],
)
def test_only_a_change_to_what_was_written_already_is_skipped(
    kind: EventKind | None, written_phase: str | None, skipped: bool
) -> None:
    ctx = agent_context(Settings())
    if written_phase is not None:
        ctx.written[UUID] = Written((), written_phase)
    assert already_mirrored(ctx, UUID, kind) == skipped
