"""Fuzz: mutated examples through `virtualpod plan`. Never a traceback; every refusal is
one line per problem naming a field of the manifest it refuses."""

from __future__ import annotations

import contextlib
import io
import re
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings

from tests.mutations import field_of, mutated_manifests
from virtualpod.cli import main

#: `error: FILE: VirtualPod NS/NAME: FIELD: MESSAGE` (or `(document N)` for a nameless one)
REFUSAL = re.compile(r"^error: (?P<file>[^:]+): VirtualPod [^:]*: (?P<field>[^: ]+): .+$")
EXAMPLES = 400


def plan(doc: dict[str, Any], path: Path) -> tuple[int, str, str]:
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["plan", "-f", str(path), "-o", "json"])
    return code, out.getvalue(), err.getvalue()


def test_mutated_examples_are_planned_or_refused_by_field(tmp_path: Path) -> None:
    seen: Counter[str] = Counter()
    path = tmp_path / "mutated.yaml"

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(doc=mutated_manifests())
    def check(doc: dict[str, Any]) -> None:
        code, out, err = plan(doc, path)  # a traceback would fail the test here
        if code == 0:
            assert err == ""
            assert '"domainXML"' in out
            seen["planned"] += 1
            return
        assert code == 1, (code, err)
        lines = err.splitlines()
        assert lines, out
        for line in lines:
            refusal = REFUSAL.match(line)
            assert refusal is not None, line
            assert field_of(refusal["field"], doc), line
        seen["refused"] += 1
        seen["refusal lines"] += len(lines)

    check()
    print(f"plan fuzz: {dict(seen)}")
    assert seen["planned"] + seen["refused"] == EXAMPLES
    # The mutations do not only break things: about one in eight plans (38 of 400 was
    # seen once, so the floor leaves room for the draw).
    assert seen["planned"] > EXAMPLES // 20, seen
    assert seen["refused"] > EXAMPLES // 4, seen
