"""Kubernetes resource quantities: cpu in millicores, memory in bytes.

Parsing is delegated to `kubernetes.utils.parse_quantity` so that every spelling
Kubernetes accepts (`500m`, `0.5`, `128Mi`, `1.5Gi`, `2G`, `1e3`, plain bytes) means
the same here. Values are rounded up like `Quantity.MilliValue()` / `Quantity.Value()`.

Bounded like Kubernetes bounds them: a quantity is an int64 count of milli-units, so
nothing above 9223372036854775807m is accepted (`1e999` would otherwise overflow every
sum and division downstream). Strings must also match `QUANTITY_PATTERN`, the CRD's
pattern, so the API server and the operator refuse the same spellings.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

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

#: Kubernetes keeps a quantity's value as int64 milli-units (`Quantity.MilliValue()`).
MAX_MILLI_UNITS = 2**63 - 1
MAX_UNITS = Decimal(MAX_MILLI_UNITS) / 1000
#: The CRD's pattern for quantity strings (tests keep the two equal): Kubernetes' grammar
#: with an integer exponent, bounded so the API server refuses `1e999` or a 60-digit value
#: itself, at no CEL cost: a two-digit exponent, and 25 integer digits (the largest
#: quantity has 19 in milli-units, 25 in nano-units).
QUANTITY_PATTERN = (
    r"^\+?(([0-9]{1,25}(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]{1,2}))?$"
)
_QUANTITY = re.compile(QUANTITY_PATTERN)


class QuantityError(ValueError):
    """A quantity that Kubernetes would reject, with the field it came from."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}: invalid quantity {shown(value)}: {reason}")


#: How much of a refused value a message repeats.
SHOWN_CHARS = 64


def shown(value: object) -> str:
    """`repr(value)`, cut short: a message names the field, not megabytes of input."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[: SHOWN_CHARS - 3]}..."


def parse_decimal(value: object, field: str) -> Decimal:
    """Parse a quantity as Kubernetes does; negatives, garbage and overflow are errors."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise QuantityError(field, value, "must be a string or a number")
    text = str(value).strip()
    try:
        amount = Decimal(parse_quantity(text))  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, ArithmeticError) as error:
        raise QuantityError(field, value, "not a Kubernetes quantity") from error
    if not amount.is_finite():
        raise QuantityError(field, value, "must be finite")
    if amount < 0:
        raise QuantityError(field, value, "must not be negative")
    if amount > MAX_UNITS:
        raise QuantityError(
            field,
            value,
            f"must be at most {MAX_MILLI_UNITS}m (Kubernetes quantities are int64 milli-units)",
        )
    if isinstance(value, str) and not _QUANTITY.fullmatch(value):
        raise QuantityError(field, value, f"must match {QUANTITY_PATTERN}")
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
