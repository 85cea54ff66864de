from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import loopback_only

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def only_loopback_traffic() -> Iterator[None]:
    """Every test runs with outgoing traffic limited to this machine (tests/loopback_only)."""
    undo = loopback_only.install()
    yield
    undo()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
