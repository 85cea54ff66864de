"""Mutated VirtualPod manifests for fuzzing (hypothesis): the examples, each changed in a
few random places -- a value replaced by something odd, a key removed, an unknown key
added -- with quantity-shaped strings weighted in, since those reach the most code.

`field_of` checks that a refusal names a field: its path must lead into the manifest.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "manifests" / "examples"
EXAMPLES = [yaml.safe_load(path.read_text()) for path in sorted(EXAMPLES_DIR.glob("*.yaml"))]
#: Keys are drawn from this alphabet so a path in a message reads back unambiguously.
KEY_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"

Path_ = tuple[str | int, ...]

SUFFIXES = ["", "m", "n", "k", "M", "G", "Ki", "Mi", "Gi", "Ti", "Ei", "e3", "E-5", "e99"]
ODD_SUFFIXES = ["e999", "e1.5", "Zi", "GB", "e999999999", " ", "\n"]


@st.composite
def quantity_strings(draw: st.DrawFn) -> str:
    sign = draw(st.sampled_from(["", "", "+", "-"]))
    digits = draw(st.text("0123456789", min_size=1, max_size=70))
    fraction = draw(
        st.one_of(st.just(""), st.text("0123456789", max_size=4).map(lambda d: "." + d))
    )
    suffix = draw(st.sampled_from(SUFFIXES * 3 + ODD_SUFFIXES))
    return f"{sign}{digits}{fraction}{suffix}"


keys = st.text(KEY_ALPHABET, min_size=1, max_size=12)
odd_values: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=24).filter(lambda text: ";" not in text),
    quantity_strings(),
    quantity_strings(),
    st.sampled_from(["", "Save", "Pause", "qcow2", "raw", "/a.img", "/", "default", "x" * 300]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(keys, st.integers(), max_size=2),
)


def paths(value: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    """Every path into a JSON-like value (the root excluded)."""
    if isinstance(value, dict):
        items: Iterator[tuple[str | int, Any]] = iter(value.items())
    elif isinstance(value, list):
        items = iter(enumerate(value))
    else:
        return
    for key, child in items:
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


def _at(doc: Any, path: Path_) -> Any:
    for key in path:
        doc = doc[key]
    return doc


@st.composite
def mutated_manifests(draw: st.DrawFn, *, under: Path_ = ()) -> dict[str, Any]:
    """An example with 1-3 mutations at or below `under` (`apiVersion`, `kind` kept)."""
    doc: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(EXAMPLES)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        candidates = [
            path
            for path in paths(doc)
            if path[: len(under)] == under and path[0] not in ("apiVersion", "kind")
        ]
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        parent, key = _at(doc, path[:-1]), path[-1]
        action = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
        if action == "replace":
            parent[key] = draw(odd_values)
        elif action == "remove":
            del parent[key]
        elif isinstance(parent[key], dict):
            parent[key][draw(keys)] = draw(odd_values)
        elif isinstance(parent[key], list) and parent[key]:
            parent[key].append(copy.deepcopy(draw(st.sampled_from(parent[key]))))
    return doc


_STEP = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


#: Where a VirtualPod's fields live.
TOP_LEVEL = ("apiVersion", "kind", "metadata", "spec")


def field_of(path: str, doc: Any) -> bool:
    """True when `path` (e.g. `spec.containers[0].resources.limits.cpu`) names a field of
    `doc`: it starts at a top-level field and follows the manifest as far as the manifest
    goes (a missing or null field may be named, and what would be inside it)."""
    steps: list[str | int] = []
    position = 0
    while position < len(path):
        match = _STEP.match(path, position)
        if match is None or match.end() == position:
            return False
        steps.append(match[1] if match[1] is not None else int(match[2]))
        position = match.end()
    if not steps or steps[0] not in TOP_LEVEL:
        return False
    node: Any = doc
    for step in steps[:-1]:
        in_dict = isinstance(node, dict) and node.get(step) is not None
        in_list = isinstance(node, list) and isinstance(step, int) and step < len(node)
        if not (in_dict or in_list):
            return isinstance(node, dict) and node.get(step) is None
        node = node[step]
    return True
