"""The agent's diff base is Kopf's essence, built with less copying."""

from __future__ import annotations

from typing import Any, cast

import kopf
import pytest

from virtualpod.kube.common import DIFFBASE_FIELD, SpecDiffBase

OBJECT: dict[str, Any] = {
    "apiVersion": "virtualpod.dev/v1alpha1",
    "kind": "VirtualPod",
    "metadata": {"name": "vm", "uid": "u", "labels": {"a": "1"}, "annotations": {"b": "2"}},
    "spec": {"containers": [{"name": "app", "resources": {"limits": {"memory": "1Gi"}}}]},
    "status": {"phase": "Running", "kopf": {"last-handled-configuration": "{}"}},
}


def _body(raw: dict[str, Any]) -> kopf.Body:
    return kopf.Body(cast(kopf.RawBody, raw))


#: Annotations Kopf leaves out of the essence: another Kopf operator's storage (marked
#: by its `kopf-managed`) and kubectl's last applied configuration.
MARKED = {
    "b": "2",
    "acme.dev/kopf-managed": "yes",
    "acme.dev/last-handled-configuration": "{}",
    "kubectl.kubernetes.io/last-applied-configuration": "{}",
}


@pytest.mark.parametrize(
    ("body", "extra_fields"),
    [
        pytest.param(OBJECT, [], id="with-status"),
        pytest.param({k: v for k, v in OBJECT.items() if k != "status"}, [], id="no-status"),
        pytest.param(OBJECT, ["status.phase"], id="a-status-field-diffed"),
        pytest.param(
            {**OBJECT, "metadata": {**OBJECT["metadata"], "annotations": MARKED}},
            [],
            id="other-operators-and-kubectl-annotations-dropped",
        ),
        pytest.param({"spec": OBJECT["spec"]}, [], id="no-metadata"),
    ],
)
def test_the_essence_is_kopfs(body: dict[str, Any], extra_fields: list[str]) -> None:
    kopfs = kopf.StatusDiffBaseStorage(field=DIFFBASE_FIELD)
    ours = SpecDiffBase(field=DIFFBASE_FIELD)
    expected = kopfs.build(body=_body(body), extra_fields=extra_fields)
    assert ours.build(body=_body(body), extra_fields=extra_fields) == expected


def test_the_essence_leaves_status_out_and_copies() -> None:
    essence: Any = SpecDiffBase(field=DIFFBASE_FIELD).build(body=_body(OBJECT))
    assert "status" not in essence
    essence["spec"]["containers"][0]["name"] = "changed"
    assert OBJECT["spec"]["containers"][0]["name"] == "app"
