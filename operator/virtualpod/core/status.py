"""Status conditions in the standard shape, and who owns which status fields.

The controller owns the binding (`podName`, `nodeName`, `admitted`, condition
`Scheduled`); an agent owns the runtime (phase, vm, `Ready`, `Suspended`, `Valid`,
`RestartRequired`). Each writes only its own: status patches are merges, but the
conditions list is replaced whole, so an agent carries the controller's conditions
over unchanged.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

Conditions = list[dict[str, Any]]

#: Status fields only the controller writes.
CONTROLLER_FIELDS = frozenset({"podName", "nodeName", "admitted"})
#: Conditions only the controller writes (in cluster mode).
CONTROLLER_CONDITIONS = frozenset({"Scheduled"})


def now_rfc3339() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Iterable[Mapping[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str = "",
    generation: int | None = None,
    *,
    now: str | None = None,
) -> Conditions:
    """Upsert one condition; lastTransitionTime moves only when the status flips."""
    value = "True" if status else "False"
    stamp = now or now_rfc3339()
    result: Conditions = []
    found = False
    for condition in conditions:
        if condition.get("type") != type_:
            result.append(dict(condition))
            continue
        found = True
        changed = condition.get("status") != value
        result.append(
            {
                "type": type_,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": stamp
                if changed
                else condition.get("lastTransitionTime", stamp),
                "observedGeneration": generation,
            }
        )
    if not found:
        result.append(
            {
                "type": type_,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": stamp,
                "observedGeneration": generation,
            }
        )
    return result


def condition_status(conditions: Iterable[Mapping[str, Any]], type_: str) -> str | None:
    """ "True", "False" or "Unknown" of one condition; None when it is absent."""
    for condition in conditions:
        if condition.get("type") == type_:
            status = condition.get("status")
            return status if isinstance(status, str) else None
    return None


def agent_fields(status: Mapping[str, Any]) -> dict[str, Any]:
    """An agent's status patch without the controller's fields (never overwritten)."""
    return {key: value for key, value in status.items() if key not in CONTROLLER_FIELDS}
