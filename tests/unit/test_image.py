from __future__ import annotations

import pytest

from tests.present import present
from virtualpod.core.image import (
    ImageError,
    ImageKind,
    ImageRef,
    image_file_name,
    parse_image,
)

DIGEST = "ab" * 32


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("nginx:1.27", None),
        ("registry.example.com/team/app@sha256:" + DIGEST, None),
        ("/srv/images/debian.qcow2", ImageRef(ImageKind.PATH, "/srv/images/debian.qcow2")),
        ("file:///srv/images/a%20b.raw", ImageRef(ImageKind.PATH, "/srv/images/a b.raw")),
        (
            f"/srv/images/debian.qcow2#sha256={DIGEST.upper()}",
            ImageRef(ImageKind.PATH, "/srv/images/debian.qcow2", DIGEST),
        ),
        (
            f"https://images.example.com/d.qcow2#sha256={DIGEST}",
            ImageRef(ImageKind.HTTP, "https://images.example.com/d.qcow2", DIGEST),
        ),
        ("http://127.0.0.1:8080/d.img", ImageRef(ImageKind.HTTP, "http://127.0.0.1:8080/d.img")),
    ],
)
def test_disk_references_parse_and_oci_names_are_not_disks(
    image: str, expected: ImageRef | None
) -> None:
    assert parse_image(image) == expected


@pytest.mark.parametrize(
    ("image", "why"),
    [
        ("/srv/../etc/shadow", "normalized"),
        ("/srv/images/", "normalized"),
        ("file://relative/path", "absolute path"),
        ("https://", "must name a host"),
        ("https://example.com/", "must name a host and a file"),
        ("/srv/d.qcow2#md5=abc", "sha256=<64 hex digits>"),
        ("/srv/d.qcow2#sha256=abc", "sha256=<64 hex digits>"),
        ("/srv/d\n.qcow2", "control characters"),
    ],
)
def test_broken_disk_references_say_why(image: str, why: str) -> None:
    with pytest.raises(ImageError, match=why):
        parse_image(image)


def test_base_file_name_is_shared_by_digest_and_safe_as_a_file_name() -> None:
    one = parse_image(f"https://a.example/x/debian.qcow2#sha256={DIGEST}")
    two = parse_image(f"https://b.example/mirror/debian.qcow2#sha256={DIGEST}")
    assert (
        image_file_name(present(one))
        == image_file_name(present(two))
        == f"{DIGEST[:16]}-debian.qcow2"
    )
    odd = parse_image("https://a.example/..%2F..%2Fetc")
    assert "/" not in image_file_name(present(odd))
    assert not image_file_name(present(odd)).startswith(".")
    assert image_file_name(present(parse_image("/a/disk.img"))) != image_file_name(
        present(parse_image("/b/disk.img"))
    )
