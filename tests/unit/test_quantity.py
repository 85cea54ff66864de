import pytest

from virtualpod.core.quantity import (
    LIBVIRT_UNIT_BYTES,
    QuantityError,
    format_bytes,
    format_cpu,
    kib_ceil,
    kib_to_bytes,
    parse_bytes,
    parse_cpu_millis,
)


@pytest.mark.parametrize(
    ("spelling", "millis"),
    [
        ("500m", 500),
        ("0.5", 500),
        ("1", 1000),
        (1, 1000),
        (0.25, 250),
        ("1e3", 1_000_000),
        ("0.0001", 1),  # rounded up, like Quantity.MilliValue()
        ("0", 0),
    ],
)
def test_cpu_spellings(spelling: float | int | str, millis: int) -> None:
    assert parse_cpu_millis(spelling, "cpu") == millis


@pytest.mark.parametrize(
    ("spelling", "count"),
    [
        ("128Mi", 128 * 2**20),
        ("1.5Gi", 1536 * 2**20),
        ("2G", 2_000_000_000),
        ("1e3", 1000),
        ("1k", 1000),
        ("1Ki", 1024),
        (4096, 4096),
        ("0.5", 1),  # rounded up, like Quantity.Value()
    ],
)
def test_memory_spellings(spelling: int | str, count: int) -> None:
    assert parse_bytes(spelling, "memory") == count


@pytest.mark.parametrize("garbage", ["-1", "-100Mi", "abc", "", "1.5.5", "1Zi", True, None, [1]])
def test_invalid_quantities_name_the_field(garbage: bool | list[int] | str | None) -> None:
    with pytest.raises(QuantityError, match=r"^spec\.x\.memory: invalid quantity"):
        parse_bytes(garbage, "spec.x.memory")


@pytest.mark.parametrize(
    ("millis", "text"), [(500, "500m"), (1000, "1"), (2500, "2500m"), (0, "0")]
)
def test_format_cpu(millis: int, text: str) -> None:
    assert format_cpu(millis) == text


@pytest.mark.parametrize(
    ("count", "text"),
    [(1536 * 2**20, "1536Mi"), (2**31, "2Gi"), (1000, "1000"), (2048, "2Ki"), (0, "0")],
)
def test_format_bytes(count: int, text: str) -> None:
    assert format_bytes(count) == text


def test_kib_rounds_up() -> None:
    assert (kib_ceil(1024), kib_ceil(1025), kib_ceil(1)) == (1, 2, 1)


@pytest.mark.parametrize(
    ("unit", "count"),
    [("KiB", 1024), ("k", 1024), ("MiB", 2**20), ("GiB", 2**30), ("KB", 1000), ("bytes", 1)],
)
def test_libvirt_units_are_binary_unless_spelled_decimal(unit: str, count: int) -> None:
    assert LIBVIRT_UNIT_BYTES[unit.lower()] == count
    assert kib_to_bytes(count) == count * 1024
