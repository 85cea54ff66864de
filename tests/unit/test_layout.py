"""The architecture as a test: which worlds each subpackage may import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "virtualpod"

#: Subpackage -> top-level modules it must never import.
FORBIDDEN = {
    "core": {"kopf", "libvirt", "aiohttp", "kmock"},
    "libvirt": {"kopf", "aiohttp", "kmock"},
    "pressure": {"kopf", "libvirt", "aiohttp", "kmock"},
    "kube": {"libvirt", "kmock"},
}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module a file imports, at any depth of the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def imported_virtualpod_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("virtualpod.")}


@pytest.mark.parametrize("subpackage", sorted(FORBIDDEN))
def test_subpackage_imports_none_of_the_worlds_it_must_not(subpackage: str) -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(imported_modules(path) & FORBIDDEN[subpackage])
        for path in sorted((PACKAGE / subpackage).rglob("*.py"))
    }
    assert {path: bad for path, bad in offenders.items() if bad} == {}


def test_core_imports_only_the_core() -> None:
    outside = {
        str(path.relative_to(PACKAGE)): sorted(
            name
            for name in imported_virtualpod_modules(path)
            if not name.startswith("virtualpod.core")
        )
        for path in sorted((PACKAGE / "core").rglob("*.py"))
    }
    assert {path: names for path, names in outside.items() if names} == {}


def test_product_code_never_imports_the_testing_package() -> None:
    users = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.parent.name not in ("testing", "demo")
        and any(name.startswith("virtualpod.testing") for name in imported_virtualpod_modules(path))
    )
    assert users == []
