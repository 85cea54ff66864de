"""The agent plans a VirtualPod once per change that can alter its plan, as tables."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from virtualpod.core.settings import Settings
from virtualpod.core.spec import SpecError
from virtualpod.kube.context import agent_context
from virtualpod.kube.plans import planned
from virtualpod.testing.measure import bench_virtualpod

UUID = "5f0c4a52-0000-4000-8000-000000000001"


def _admitted(body: dict[str, Any], memory: str = "64Mi") -> dict[str, Any]:
    resources = {"requests": {"cpu": "10m", "memory": "1Mi"}, "limits": {"memory": memory}}
    body["status"] = {"admitted": {"containers": [{"name": "app", "resources": resources}]}}
    return body


def _vpod() -> dict[str, Any]:
    body = bench_virtualpod(1)
    body["metadata"].update(uid="uid-1", generation=1)
    return _admitted(body)


def _changed(what: str) -> dict[str, Any]:
    body = _vpod()
    if what == "status-phase":
        body["status"]["phase"] = "Running"
    elif what == "label":
        body["metadata"]["labels"] = {"team": "a"}
    elif what == "generation":
        body["metadata"]["generation"] = 2
    elif what == "admitted":
        _admitted(body, memory="128Mi")
    return body


@pytest.mark.parametrize(
    ("change", "replanned"),
    [
        pytest.param("status-phase", False, id="a-phase-change-keeps-the-plan"),
        pytest.param("label", False, id="a-label-change-keeps-the-plan"),
        pytest.param("generation", True, id="a-new-spec-is-planned-again"),
        pytest.param("admitted", True, id="a-new-admission-is-planned-again"),
    ],
)
def test_a_plan_is_made_again_only_when_it_can_change(change: str, replanned: bool) -> None:
    ctx = agent_context(Settings())
    first = planned(ctx, UUID, _vpod())
    again = planned(ctx, UUID, _changed(change))
    assert first is not None
    assert again is not None
    assert (again is not first) == replanned


def test_the_plan_follows_the_admitted_pod() -> None:
    ctx = agent_context(Settings())
    before = planned(ctx, UUID, _vpod())
    after = planned(ctx, UUID, _changed("admitted"))  # a larger memory limit admitted
    assert before is not None
    assert after is not None
    assert after.size.memory_bytes > before.size.memory_bytes


def test_nothing_admitted_has_no_plan_yet() -> None:
    body = _vpod()
    del body["status"]
    assert planned(agent_context(Settings()), UUID, body) is None


def test_an_invalid_spec_raises_each_time_until_it_changes() -> None:
    ctx = agent_context(Settings())
    body = _vpod()
    body["spec"]["containers"][0]["name"] = "Not_A_DNS_Label"
    messages = []
    for _ in range(2):
        with pytest.raises(SpecError) as raised:
            planned(ctx, UUID, copy.deepcopy(body))
        messages.append(str(raised.value))
    assert messages[0] == messages[1]
    assert "containers[0].name" in messages[0]
