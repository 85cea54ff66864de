"""The NoCloud seed as an ISO 9660 image labelled `cidata`, built in memory (pycdlib).

Rock Ridge and Joliet names carry the exact file names cloud-init looks for
(`meta-data`, `user-data`); the plain ISO 9660 names are their 8.3 shadows.
"""

from __future__ import annotations

import io

import pycdlib

from virtualpod.core.cloudinit import META_DATA, SEED_LABEL, USER_DATA, SeedFiles

ROCK_RIDGE = "1.09"
JOLIET = 3
_ISO_NAMES = {META_DATA: "/METADATA.;1", USER_DATA: "/USERDATA.;1"}


def build_seed_iso(files: SeedFiles) -> bytes:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=SEED_LABEL, rock_ridge=ROCK_RIDGE, joliet=JOLIET)
    for name, text in ((META_DATA, files.meta_data), (USER_DATA, files.user_data)):
        data = text.encode()
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            _ISO_NAMES[name],
            rr_name=name,
            joliet_path=f"/{name}",
        )
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def read_seed_iso(image: bytes) -> dict[str, str]:
    """The seed's files by their Rock Ridge names (what a guest sees); for checks."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(image))
    try:
        files = {}
        for name in _ISO_NAMES:
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            files[name] = out.getvalue().decode()
        return files
    finally:
        iso.close()
