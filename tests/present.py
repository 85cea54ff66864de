"""`present(x)`: a value a test expects to be there, narrowed from `X | None`."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def present(value: T | None) -> T:
    """The value; the test fails here, naming nothing else, when it is None."""
    assert value is not None
    return value
