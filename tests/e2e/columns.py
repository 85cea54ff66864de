"""What `kubectl get vpod` would show: the CRD's printer columns, evaluated on an object."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from virtualpod.core.spec import API_VERSION

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "virtualpod.dev_virtualpods.yaml"


def printer_columns(obj: dict[str, Any]) -> dict[str, Any]:
    """What `kubectl get vpod` shows for `obj`: the CRD's printer columns, evaluated."""
    crd = yaml.safe_load(CRD_PATH.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == API_VERSION)
    row: dict[str, Any] = {}
    for column in version["additionalPrinterColumns"]:
        value: Any = obj
        for key in column["jsonPath"].lstrip(".").split("."):
            value = value.get(key) if isinstance(value, dict) else None
        row[column["name"]] = value
    return row
