"""The user docs state facts the code can check: settings keys and defaults, plan output."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from virtualpod.cli import plan_files, plan_table
from virtualpod.core.settings import DEFAULTS_YAML, Settings, settings_from_mapping
from virtualpod.core.tuning import cpu_weight_from_shares

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
EXAMPLES = REPO / "manifests" / "examples"


def _flatten(mapping: dict[str, object], prefix: str = "") -> dict[str, object]:
    keys: dict[str, object] = {}
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            keys.update(_flatten(value, f"{path}."))
        else:
            keys[path] = value
    return keys


def _doc_default(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if value == "":
        return '""'
    return str(value)


def _code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


SETTINGS_DOC = (DOCS / "settings.md").read_text(encoding="utf-8")
DEFAULT_KEYS = _flatten(yaml.safe_load(DEFAULTS_YAML))


def test_defaults_yaml_has_keys_to_document() -> None:
    assert len(DEFAULT_KEYS) >= 20
    assert "eviction.hard.memoryAvailable" in DEFAULT_KEYS


@pytest.mark.parametrize("key", sorted(DEFAULT_KEYS))
def test_every_setting_is_documented_with_its_default(key: str) -> None:
    rows = re.findall(rf"^\| `{re.escape(key)}` \| `([^`]*)` \|", SETTINGS_DOC, flags=re.M)
    assert rows, f"docs/settings.md has no table row for `{key}`"
    assert rows == [_doc_default(DEFAULT_KEYS[key])]


def test_settings_doc_documents_no_key_that_does_not_exist() -> None:
    documented = set(re.findall(r"^\| `([A-Za-z0-9.]+)` \|", SETTINGS_DOC, flags=re.M))
    assert documented == set(DEFAULT_KEYS)


def test_settings_doc_ships_defaults_yaml_verbatim() -> None:
    assert DEFAULTS_YAML in _code_blocks(SETTINGS_DOC, "yaml")


def test_every_yaml_example_in_settings_doc_loads() -> None:
    blocks = _code_blocks(SETTINGS_DOC, "yaml")
    assert len(blocks) >= 2
    for block in blocks:
        settings_from_mapping(yaml.safe_load(block))


def test_sizing_doc_table_is_what_plan_prints() -> None:
    paths = [
        str(EXAMPLES / name)
        for name in (
            "besteffort.yaml",
            "burstable.yaml",
            "guaranteed.yaml",
            "init-container.yaml",
            "multi-container.yaml",
        )
    ]
    plans, failures = plan_files(paths, Settings())
    assert not failures
    assert plan_table(plans) in (DOCS / "sizing.md").read_text(encoding="utf-8")


def test_qos_doc_weight_table_matches_the_conversion() -> None:
    text = (DOCS / "qos-tuning.md").read_text(encoding="utf-8")
    shares_row = re.search(r"^\| shares \(v1\) \|(.*)\|$", text, flags=re.M)
    weight_row = re.search(r"^\| weight \(v2\) \|(.*)\|$", text, flags=re.M)
    assert shares_row
    assert weight_row
    shares = [int(cell) for cell in shares_row.group(1).split("|")]
    weights = [int(cell) for cell in weight_row.group(1).split("|")]
    assert [cpu_weight_from_shares(value) for value in shares] == weights


def test_docs_link_to_existing_docs() -> None:
    for page in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([a-z-]+\.md)\)", page.read_text(encoding="utf-8")):
            assert (DOCS / target).exists(), f"{page.name} links to missing {target}"
