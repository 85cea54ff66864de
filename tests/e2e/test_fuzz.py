"""Fuzz: mutated examples through the running operator on the emulator.

The emulator stores whatever is posted (a real API server would refuse much of it at
the schema), so the operator meets the raw mutations. It must never log a traceback;
an object it cannot run is `Valid=False` with the same field-named message `virtualpod
plan` gives, and one InvalidSpec Warning; every other object gets a phase.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.e2e.conftest import Env, unique
from tests.mutations import field_of, mutated_manifests
from tests.waiting import async_wait_for
from virtualpod.core.plan import plan_virtualpod
from virtualpod.core.spec import SpecError
from virtualpod.testing.objects import BUILTIN_RESOURCES, VIRTUALPODS

EXAMPLES = 200
EVENTS = next(spec for spec in BUILTIN_RESOURCES if spec.plural == "events")


def drawn_manifests(count: int) -> list[dict[str, Any]]:
    """`count` mutated manifests, the same every run (derandomized: CI reproduces them)."""
    drawn: list[dict[str, Any]] = []

    @settings(
        max_examples=count,
        database=None,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(doc=mutated_manifests(under=("spec",)))
    def collect(doc: dict[str, Any]) -> None:
        drawn.append(doc)

    collect()
    return drawn


class Tracebacks(logging.Handler):
    """Every log record that carries an exception, from any logger."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or "failed with an exception" in record.getMessage():
            self.records.append(record)


@contextmanager
def catching_tracebacks() -> Iterator[Tracebacks]:
    handler = Tracebacks()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def expected_error(obj: dict[str, Any], env: Env) -> SpecError | None:
    try:
        plan_virtualpod(obj, env.settings, cgroup_version=env.hv.cgroup_version)
    except SpecError as error:
        return error
    return None


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    status = obj.get("status") or {}
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


async def test_mutated_manifests_never_crash_or_loop_the_operator(env: Env) -> None:
    if env.emulator is None or env.name != "emulator-test":
        pytest.skip("the emulator stores unvalidated objects; one backend is enough")
    emulator = env.emulator
    manifests = drawn_manifests(EXAMPLES)
    names = []
    with catching_tracebacks() as tracebacks:
        await env.start_operator()
        for doc in manifests:
            doc["metadata"] = {"name": unique("fuzz"), "namespace": env.namespace}
            await env.kube.create(doc)
            names.append(doc["metadata"]["name"])

        async def handled() -> dict[str, dict[str, Any]] | None:
            stored = {
                o["metadata"]["name"]: o for o in emulator.list_objects(VIRTUALPODS.key, "default")
            }
            done = {n: stored[n] for n in names if condition(stored[n], "Valid") is not None}
            return done if len(done) == len(names) else None

        objects = await async_wait_for(handled, timeout=60, what="every object handled")

        seen: Counter[str] = Counter()
        invalid = []
        for name, obj in objects.items():
            valid = condition(obj, "Valid")
            assert valid is not None
            error = expected_error(obj, env)
            if error is None:
                assert valid["status"] == "True", (name, valid)
                assert obj["status"]["phase"] in ("Running", "Pending", "Failed"), obj["status"]
                assert obj["status"]["reason"] != "ReconcileError", obj["status"]
                seen[f"valid, {obj['status']['phase']}"] += 1
                continue
            assert valid["status"] == "False", (name, valid)
            assert valid["message"] == str(error)
            assert all(field_of(e.path, obj) for e in error.errors), error
            invalid.append(name)
            seen["invalid"] += 1

        async def warned() -> Counter[str] | None:
            counts = Counter(
                e["involvedObject"]["name"]
                for e in emulator.list_objects(EVENTS.key, env.namespace)
                if e["reason"] == "InvalidSpec"
            )
            return counts if all(counts[name] for name in invalid) else None

        warnings = await async_wait_for(warned, timeout=20, what="an InvalidSpec Event each")
    assert all(warnings[name] == 1 for name in invalid), warnings
    assert tracebacks.records == [], [r.getMessage() for r in tracebacks.records]
    print(f"operator fuzz: {len(objects)} objects, {dict(seen)}")
    assert seen["invalid"], seen  # both outcomes were exercised
    assert len(objects) > seen["invalid"], seen
