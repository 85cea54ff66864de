"""The pressure loop's pure parts, table by table: messages, intents, ledger, PSI, views."""

from __future__ import annotations

import pytest

from virtualpod.core.domain import DomainMetadata
from virtualpod.core.qos import QOSClass
from virtualpod.core.spec import SuspendMode
from virtualpod.libvirt.hypervisor import DomainInfo, DomainState
from virtualpod.pressure import messages
from virtualpod.pressure.intents import Action, Intent, intent_from_xml, intent_to_xml
from virtualpod.pressure.inventory import Tracked, vm_view
from virtualpod.pressure.ledger import InFlight, Ledger
from virtualpod.pressure.ordering import tick
from virtualpod.pressure.policy import VMState
from virtualpod.pressure.recovery import is_suspended
from virtualpod.pressure.signals import parse_psi

MI = 2**20


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "?"), (0, "0Mi"), (MI, "1Mi"), (1536 * 1024, "2Mi"), (300 * MI, "300Mi")],
)
def test_mib_rounds_for_people(value, text):
    assert messages.mib(value) == text


def test_signal_message_names_source_threshold_need_and_psi():
    text = messages.signal_message("pool", 50 * MI, "hard", 100 * MI, 60 * MI, 12.34)
    assert text == "pool memory.available 50Mi < hard 100Mi, PSI some avg10 12.3%; need 60Mi"
    assert "PSI" not in messages.signal_message("host", 1, "soft", 2, 3)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (SuspendMode.SAVE, "why; Save took 1.50s, released 300Mi"),
        (SuspendMode.PAUSE, "why; paused (Pause keeps the VM's memory)"),
    ],
)
def test_a_suspension_says_what_it_released(mode, expected):
    assert messages.suspended_message("why", mode, 1.5, 300 * MI) == expected


@pytest.mark.parametrize(
    ("rolled_back", "text"),
    [
        (True, "suspend rolled back after an operator restart"),
        (False, "resume completed after an operator restart"),
    ],
)
def test_running_again_after_a_restart_says_which_way(rolled_back, text):
    assert messages.running_again_message(rolled_back) == text


@pytest.mark.parametrize(
    "intent",
    [
        Intent(Action.SUSPEND, "Save", False, 300 * MI, "a < b & c", at=1.5),
        Intent(Action.RESUME, "Pause", True, 0, at=2.0),
    ],
)
def test_intents_round_trip_through_xml(intent):
    assert intent_from_xml(intent_to_xml(intent)) == intent


@pytest.mark.parametrize(
    "xml",
    [
        '<intent action="balloon" mode="Save"/>',  # balloons are not recorded
        '<intent action="" mode="Save"/>',
        '<intent action="suspend" mode="Sleep"/>',
    ],
)
def test_intents_we_did_not_write_are_refused(xml):
    with pytest.raises(ValueError):  # noqa: PT011 (the message varies by field)
        intent_from_xml(xml)


def test_an_intent_given_a_plain_string_holds_the_action():
    assert Intent("suspend", "Save", True, 0).suspended  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("flight", "intent", "running", "state"),
    [
        (InFlight(Action.SUSPEND, 1), None, True, VMState.SUSPENDING),
        (InFlight(Action.RESUME, 0), None, False, VMState.RESUMING),
        (InFlight(Action.BALLOON, 1), None, True, VMState.RUNNING),  # a credit, no state
        (None, Intent(Action.SUSPEND, "Save", True, 0), False, VMState.SUSPENDED),
        (None, Intent(Action.SUSPEND, "Save", False, 0), True, VMState.RUNNING),
        (None, None, True, VMState.RUNNING),
        (None, None, False, None),  # shut off or suspended by someone else
    ],
)
def test_the_ledger_says_each_vms_state(flight, intent, running, state):
    ledger = Ledger()
    if flight is not None:
        ledger.in_flight["vm"] = flight
    if intent is not None:
        ledger.ours["vm"] = intent
    assert ledger.state_of("vm", running) is state
    assert ledger.busy() == ({"vm"} if flight is not None and flight.changes_state else set())


def test_balloon_credits_expire_and_order_is_a_sequence():
    ledger = Ledger()
    ledger.in_flight["b"] = InFlight(Action.BALLOON, MI, expires_at=10.0)
    ledger.expire(9.9)
    assert "b" in ledger.in_flight
    ledger.expire(10.0)
    assert "b" not in ledger.in_flight
    before = tick()
    ledger.settled_at["vm"] = tick()
    assert ledger.settled_after("vm", before)
    assert not ledger.settled_after("vm", tick())
    assert not ledger.settled_after("other", before)


@pytest.mark.parametrize(
    ("text", "avg10"),
    [
        ("some avg10=1.50 avg60=0.00 avg300=0.00 total=1\nfull avg10=0.00", 1.5),
        ("full avg10=3.00 avg60=0.00", None),
        ("some avg60=1.00", None),
        ("some avg10=x", None),
        ("", None),
    ],
)
def test_psi_some_avg10(text, avg10):
    assert parse_psi(text) == avg10


def tracked(
    *, state: DomainState = DomainState.RUNNING, saved: bool = False, qos: str = "Burstable"
) -> Tracked:
    info = DomainInfo("u", "vm", state, "", True, saved, 1, 512 * MI, 256 * MI)
    meta = DomainMetadata("ns", "vm", None, qos, 5, 64 * MI)
    return Tracked(info, meta, 100 * MI)


@pytest.mark.parametrize(
    ("state", "intent", "memory"),
    [
        (VMState.RUNNING, None, 100 * MI),  # RSS
        (VMState.SUSPENDED, Intent(Action.SUSPEND, "Save", True, 300 * MI), 300 * MI),
        (VMState.RESUMING, Intent(Action.RESUME, "Save", False, 200 * MI), 200 * MI),
        (VMState.SUSPENDED, None, 100 * MI),
    ],
)
def test_a_view_counts_what_a_resume_takes_back(state, intent, memory):
    vm = vm_view(tracked(), state, intent, SuspendMode.SAVE)
    assert vm is not None
    assert (vm.usage_bytes, vm.qos_class, vm.priority) == (memory, QOSClass.BURSTABLE, 5)


def test_a_domain_of_unknown_class_has_no_view():
    assert vm_view(tracked(qos="Gold"), VMState.RUNNING, None, SuspendMode.SAVE) is None


@pytest.mark.parametrize(
    ("state", "saved", "mode", "suspended"),
    [
        (DomainState.SHUTOFF, True, SuspendMode.SAVE, True),
        (DomainState.SHUTOFF, False, SuspendMode.SAVE, False),
        (DomainState.PAUSED, False, SuspendMode.SAVE, False),
        (DomainState.PAUSED, False, SuspendMode.PAUSE, True),
        (DomainState.RUNNING, False, SuspendMode.PAUSE, False),
    ],
)
def test_suspended_means_saved_for_save_and_paused_for_pause(state, saved, mode, suspended):
    assert is_suspended(tracked(state=state, saved=saved), mode) is suspended
