"""`kube.poster.EventPoster`: the operator's Events reach the API server in the order
they were said, say who posted them, and never fail or block whoever said them."""

from __future__ import annotations

import logging
import socket

import pytest

from tests.cluster.conftest import Cluster
from virtualpod.kube.api import ObjectRef
from virtualpod.kube.poster import EventPoster, object_ref
from virtualpod.kube.rest import RestClient

REASONS = ("Created", "Started", "Suspended", "Resumed")


def web_ref(namespace: str) -> ObjectRef:
    return ObjectRef("virtualpod.dev/v1alpha1", "VirtualPod", namespace, "web", "uid-of-web")


async def test_events_are_posted_in_the_order_they_were_said(cluster: Cluster) -> None:
    rest = await RestClient.connect(cluster.api_url)  # None (a real cluster): $KUBECONFIG
    poster = EventPoster(rest, "node-a")
    try:
        for reason in REASONS:
            poster.post(web_ref(cluster.namespace), "Normal", reason, f"the VM: {reason}")
        poster.warn(
            {
                "apiVersion": "virtualpod.dev/v1alpha1",
                "kind": "VirtualPod",
                "metadata": {"namespace": cluster.namespace, "name": "web", "uid": "uid-of-web"},
            },
            reason="Failed",
            message="cannot start",
        )
        await poster.close()
    finally:
        await rest.close()
    events = sorted(
        await cluster.events("web"), key=lambda e: int(e["metadata"]["resourceVersion"])
    )
    assert [(e["type"], e["reason"]) for e in events] == [
        *(("Normal", reason) for reason in REASONS),
        ("Warning", "Failed"),
    ]
    assert [e["message"] for e in events[:2]] == ["the VM: Created", "the VM: Started"]
    times = [e["eventTime"] for e in events]
    assert times == sorted(times)  # stamped when said, posted in that order
    for event in events:
        assert event["reportingComponent"] == "virtualpod"
        assert event["reportingInstance"] == "node-a"
        assert event["involvedObject"]["kind"] == "VirtualPod"
        assert event["involvedObject"]["uid"] == "uid-of-web"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_api_server_that_refuses_costs_a_log_line_per_event_and_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rest = RestClient(f"http://127.0.0.1:{closed_port()}", {}, False)
    poster = EventPoster(rest, "node-a")
    try:
        with caplog.at_level(logging.WARNING, logger="virtualpod.kube.poster"):
            poster.post(web_ref("default"), "Normal", "Created", "defined")
            poster.post(web_ref("default"), "Normal", "Started", "started")
            await poster.close(timeout=10)
    finally:
        await rest.close()
    failed = [r.getMessage() for r in caplog.records if "cannot post" in r.getMessage()]
    assert len(failed) == 2, failed
    assert failed[0].startswith("cannot post the Created Event on default/web")


async def test_beyond_the_queue_limit_the_newest_events_are_dropped_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rest = RestClient(f"http://127.0.0.1:{closed_port()}", {}, False)
    poster = EventPoster(rest, "node-a", limit=2)
    try:
        with caplog.at_level(logging.WARNING, logger="virtualpod.kube.poster"):
            for reason in REASONS:  # nothing is posted until the caller yields
                poster.post(web_ref("default"), "Normal", reason, "-")
            await poster.close(timeout=10)
    finally:
        await rest.close()
    assert poster.dropped == 2
    messages = [r.getMessage() for r in caplog.records]
    assert "dropped the Suspended Event on default/web: queue full" in messages
    assert "dropped the Resumed Event on default/web: queue full" in messages
    assert (
        sum("cannot post the Created" in m or "cannot post the Started" in m for m in messages) == 2
    )


def test_the_object_an_event_is_about_comes_from_its_body() -> None:
    body = {
        "apiVersion": "virtualpod.dev/v1alpha1",
        "kind": "VirtualPod",
        "metadata": {"namespace": "shop", "name": "db", "uid": "u-1"},
    }
    assert object_ref(body) == ObjectRef(
        "virtualpod.dev/v1alpha1", "VirtualPod", "shop", "db", "u-1"
    )
