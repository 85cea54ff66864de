"""Kubernetes resource quantities: cpu in millicores, memory in bytes.

Parsing is delegated to `kubernetes.utils.parse_quantity` so that every spelling
Kubernetes accepts (`500m`, `0.5`, `128Mi`, `1.5Gi`, `2G`, `1e3`, plain bytes) means
the same here. Values are rounded up like `Quantity.MilliValue()` / `Quantity.Value()`.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation

from kubernetes.utils import parse_quantity

#: Every unit the project uses is defined here and nowhere else.
MILLICPU_PER_CPU = 1000
KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
TIB = 1024 * GIB
KB = 1000
MB = 1000 * KB
GB = 1000 * MB

#: libvirt's `unit` attribute on memory elements (case-insensitive), in bytes.
LIBVIRT_UNIT_BYTES = {
    "b": 1,
    "bytes": 1,
    "k": KIB,
    "kib": KIB,
    "m": MIB,
    "mib": MIB,
    "g": GIB,
    "gib": GIB,
    "kb": KB,
    "mb": MB,
    "gb": GB,
}


class QuantityError(ValueError):
    """A quantity that Kubernetes would reject, with the field it came from."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}: invalid quantity {value!r}: {reason}")


def parse_decimal(value: object, field: str) -> Decimal:
    """Parse a quantity as Kubernetes does; negatives and garbage are errors."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise QuantityError(field, value, "must be a string or a number")
    text = str(value).strip()
    try:
        amount = Decimal(parse_quantity(text))  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, InvalidOperation) as error:
        raise QuantityError(field, value, "not a Kubernetes quantity") from error
    if not amount.is_finite():
        raise QuantityError(field, value, "must be finite")
    if amount < 0:
        raise QuantityError(field, value, "must not be negative")
    return amount


def parse_cpu_millis(value: object, field: str) -> int:
    """CPU quantity -> millicores, rounded up (`0.0001` is `1m`)."""
    return math.ceil(parse_decimal(value, field) * MILLICPU_PER_CPU)


def parse_bytes(value: object, field: str) -> int:
    """Memory quantity -> bytes, rounded up."""
    return math.ceil(parse_decimal(value, field))


def format_cpu(millis: int) -> str:
    """Millicores in the shortest exact Kubernetes spelling: `2`, `500m`."""
    whole, rest = divmod(millis, MILLICPU_PER_CPU)
    return str(whole) if rest == 0 else f"{millis}m"


def format_bytes(count: int) -> str:
    """Bytes in the largest exact binary suffix: `1536Mi`, `2Gi`, `1000`."""
    for suffix, unit in (("Ti", TIB), ("Gi", GIB), ("Mi", MIB), ("Ki", KIB)):
        if count and count % unit == 0:
            return f"{count // unit}{suffix}"
    return str(count)


def kib_ceil(count: int) -> int:
    """Bytes -> KiB, rounded up: libvirt's unit for memory sizes and limits."""
    return -(-count // KIB)


def kib_to_bytes(kib: int) -> int:
    """KiB (what libvirt reports) -> bytes."""
    return kib * KIB
