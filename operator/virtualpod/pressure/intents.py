"""Intents: what the pressure loop is doing or did to a VM, written before it acts.

Kept by default in the domain itself (`DomainIntentStore`: a `<pressure:intent>` element
in its `<metadata>`, persistent definition and live), so an intent survives the operator,
the node's disk layout and a redefinition, and leaves with the VM.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Protocol

from virtualpod.core.spec import SuspendMode
from virtualpod.libvirt.hypervisor import DomainNotFound

log = logging.getLogger(__name__)

INTENT_KEY = "pressure"


class Action(enum.StrEnum):
    """What the loop does to a VM (the values are what intents store)."""

    SUSPEND = "suspend"
    RESUME = "resume"
    BALLOON = "balloon"


#: The actions an intent records (a balloon changes no state worth recovering).
RECORDED = frozenset({Action.SUSPEND, Action.RESUME})


@dataclass
class Intent:
    """What the loop is doing or did to one VM; written before acting.

    `done` False while libvirt is at it. `memory_bytes` is the RSS at suspend time: what
    a resume will take back. `at` is wall-clock time, for people reading the domain XML.
    """

    action: Action
    mode: str
    done: bool
    memory_bytes: int
    message: str = ""
    at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.action = Action(self.action)

    @property
    def suspend_mode(self) -> SuspendMode:
        return SuspendMode(self.mode)

    @property
    def suspended(self) -> bool:
        """A suspend that libvirt finished."""
        return self.action is Action.SUSPEND and self.done


class IntentStore(Protocol):
    async def load(self) -> dict[str, Intent]: ...
    async def put(self, uuid: str, intent: Intent) -> None: ...
    async def delete(self, uuid: str) -> None: ...


class IntentPort(Protocol):
    """The hypervisor's runtime metadata (`Hypervisor.set_metadata` and friends)."""

    async def set_metadata(self, uuid: str, key: str, xml: str | None) -> None: ...
    async def metadata(self, uuid: str, key: str) -> str | None: ...
    async def metadata_of_all(self, key: str) -> dict[str, str]: ...


def intent_to_xml(intent: Intent) -> str:
    element = ET.Element(
        "intent",
        action=intent.action.value,
        mode=intent.mode,
        done="true" if intent.done else "false",
        memoryBytes=str(intent.memory_bytes),
        at=repr(intent.at),
    )
    if intent.message:
        ET.SubElement(element, "message").text = intent.message
    return ET.tostring(element, encoding="unicode")


def intent_from_xml(xml: str) -> Intent:
    """Raises ValueError (or ET.ParseError, a SyntaxError) on what we did not write."""
    element = ET.fromstring(xml)
    action = element.get("action", "")
    if action not in RECORDED:
        raise ValueError(f"unknown intent action {action!r}")
    return Intent(
        action=Action(action),
        mode=SuspendMode(element.get("mode", "")).value,
        done=element.get("done") == "true",
        memory_bytes=int(element.get("memoryBytes", "0")),
        message=element.findtext("message") or "",
        at=float(element.get("at", "0")),
    )


class DomainIntentStore:
    """Intents kept in the domain itself (`<pressure:intent>` in its `<metadata>`).

    They live and die with the VM: written to the persistent definition (and the live
    one), kept by a managed save and by a redefinition, gone when the domain is
    undefined, shared by every operator process that talks to this libvirtd.
    An element that does not parse is logged and ignored: libvirt's state still decides.
    """

    def __init__(self, hv: IntentPort, key: str = INTENT_KEY) -> None:
        self.hv = hv
        self.key = key

    async def load(self) -> dict[str, Intent]:
        out = {}
        for uuid, xml in (await self.hv.metadata_of_all(self.key)).items():
            try:
                out[uuid] = intent_from_xml(xml)
            except (ValueError, SyntaxError) as error:
                log.warning("ignoring unreadable pressure intent of domain %s: %s", uuid, error)
        return out

    async def put(self, uuid: str, intent: Intent) -> None:
        await self.hv.set_metadata(uuid, self.key, intent_to_xml(intent))

    async def delete(self, uuid: str) -> None:
        with contextlib.suppress(DomainNotFound):  # the intent went with the domain
            await self.hv.set_metadata(uuid, self.key, None)
