"""What the emulator serves, as data: selectors, merge patches and quantities as tables,
and over HTTP a write's answer and its watch event carrying the same object."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import aiohttp
import pytest

from virtualpod.core.quantity import QuantityError
from virtualpod.testing.admission import quantity_value
from virtualpod.testing.emulator import serve_emulator
from virtualpod.testing.objects import (
    apply_merge_patch,
    field_terms,
    label_terms,
    matches_selectors,
)

OBJ = {
    "metadata": {"name": "a", "namespace": "ns", "labels": {"app": "web", "tier": "db"}},
    "spec": {"nodeName": "n1"},
}


@pytest.mark.parametrize(
    ("labels", "fields", "expected"),
    [
        (None, None, True),
        ("", "", True),
        ("app=web", None, True),
        ("app==web", None, True),
        ("app=api", None, False),
        ("app!=api", None, True),
        ("app!=web", None, False),
        ("app", None, True),
        ("!app", None, False),
        ("!missing", None, True),
        ("missing", None, False),
        ("app=web, tier=db", None, True),
        ("app=web,tier=cache", None, False),
        (None, "metadata.name=a", True),
        (None, "metadata.name!=a", False),
        (None, "spec.nodeName=n1,metadata.namespace=ns", True),
        (None, "spec.missing=", True),
        (None, "spec.missing!=", False),
        ("app=web", "metadata.name=b", False),
    ],
)
def test_selectors_match_as_the_api_server_does(
    labels: str | None, fields: str | None, expected: bool
) -> None:
    assert matches_selectors(OBJ, labels, fields) is expected


@pytest.mark.parametrize(
    ("selector", "terms"),
    [
        ("a=1,b!=2", (("=", "a", "1"), ("!=", "b", "2"))),
        (" a == 1 ,, !b, c", (("=", "a", "1"), ("", "!b", ""), ("", "c", ""))),
        ("!b", (("!", "b", ""),)),
    ],
    ids=["equality and inequality", "spaces, empty terms, a spaced negation", "negation"],
)
def test_label_selector_terms(selector: str, terms: tuple[tuple[str, str, str], ...]) -> None:
    assert label_terms(selector) == terms


def test_a_field_selector_term_without_a_value_is_an_error() -> None:
    assert field_terms("a.b!=c") == ((True, "a.b", "c"),)
    with pytest.raises(ValueError, match="unpack"):
        field_terms("a.b")


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": 1}, {"a": None}, {}),
        ({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": [1]}}, {"a": {"c": 2, "d": [1]}}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
        ({"a": 1}, {"b": {"c": None}}, {"a": 1, "b": {}}),
        ({"a": 1}, [1], [1]),
    ],
    ids=["null deletes", "objects merge", "arrays replace", "a new object", "not an object"],
)
def test_merge_patch_is_rfc_7386(target: Any, patch: Any, expected: Any) -> None:
    assert apply_merge_patch(target, patch) == expected


def test_a_merge_patch_changes_neither_argument_and_shares_what_it_keeps() -> None:
    conditions = [{"t": "A"}]
    target: dict[str, Any] = {"spec": {"x": [1]}, "status": {"conditions": conditions}}
    patch = {"status": {"phase": "Running"}}
    before = copy.deepcopy((target, patch))
    merged = apply_merge_patch(target, patch)
    assert (target, patch) == before
    assert merged["spec"] is target["spec"]
    assert merged["status"] is not target["status"]
    assert merged["status"]["conditions"] is conditions


@pytest.mark.parametrize(
    ("value", "expected"),
    [("100m", 0.1), ("1Gi", 2.0**30), ("2", 2.0), (3, 3.0), (0.5, 0.5), ("1e3", 1000.0)],
)
def test_quantity_value_is_the_parsed_quantity(value: object, expected: float) -> None:
    assert quantity_value(value) == expected
    assert quantity_value(value) == expected  # once parsed, the same


@pytest.mark.parametrize("value", [True, "abc", -1, None, ["1"]])
def test_quantity_value_refuses_what_is_not_a_quantity(value: object) -> None:
    quantity_value(1)  # parsed: 1 == True must not answer for True
    with pytest.raises(QuantityError):
        quantity_value(value)


async def test_a_write_is_answered_with_the_object_its_watch_event_carries() -> None:
    vpods = "/apis/virtualpod.dev/v1alpha1/namespaces/default/virtualpods"
    async with serve_emulator() as (url, emu), aiohttp.ClientSession() as session:
        since = str(emu.resource_version)
        watch = await session.get(url + vpods, params={"watch": "true", "resourceVersion": since})
        body = {"metadata": {"name": "v"}, "spec": {"x": "é"}}
        async with session.post(url + vpods, json=body) as created:
            assert created.status == 201
            assert created.headers["Content-Type"] == "application/json; charset=utf-8"
            answer = await created.read()
        patch = json.dumps({"status": {"phase": "Running"}})
        headers = {"Content-Type": "application/merge-patch+json"}
        async with session.patch(f"{url}{vpods}/v/status", data=patch, headers=headers) as patched:
            assert patched.status == 200
            second = await patched.read()
        async with session.get(f"{url}{vpods}/v") as got:
            assert await got.read() == second
        lines = [await asyncio.wait_for(watch.content.readline(), 5) for _ in range(2)]
        watch.close()
    assert lines == [
        b'{"type": "ADDED", "object": ' + answer + b"}\n",
        b'{"type": "MODIFIED", "object": ' + second + b"}\n",
    ]
    assert json.loads(second)["status"] == {"phase": "Running"}
    assert json.loads(answer)["spec"] == {"x": "é"}
