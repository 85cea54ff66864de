"""`NewestObjects`: a controller's cache of the watch and of its own writes' answers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from virtualpod.kube.newest import JSON, NewestObjects

KEY = ("default", "web")
LAG = 10.0


def version(rv: str) -> JSON:
    return {"metadata": {"name": "web", "resourceVersion": rv}}


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


#: Steps: ("watch", rv) a watch event, ("send",) a write sent, ("answer", rv) its answer,
#: ("fail",) its failure, ("wait", seconds).
Step = tuple[str, ...]

CASES: dict[str, tuple[list[Step], list[bool], str]] = {
    "watch events replace each other": (
        [("watch", "1"), ("watch", "2")],
        [True, True],
        "2",
    ),
    "an event older than a write's answer is ignored": (
        [("watch", "1"), ("send",), ("answer", "3"), ("watch", "2")],
        [True, False],
        "3",
    ),
    "the answer's own event is not news, the next one is": (
        [("send",), ("answer", "3"), ("watch", "3"), ("watch", "4")],
        [False, True],
        "4",
    ),
    "the watch delivering the write before its answer keeps the watch's object": (
        [("send",), ("watch", "3"), ("answer", "3"), ("watch", "4")],
        [True, True],
        "4",
    ),
    "a newer write by someone else seen before the answer wins": (
        [("send",), ("watch", "3"), ("watch", "4"), ("answer", "3")],
        [True, True],
        "4",
    ),
    "a stale event during a second write is still older than the first answer": (
        [("send",), ("answer", "3"), ("send",), ("watch", "2"), ("answer", "5"), ("watch", "3")],
        [False, False],
        "5",
    ),
    "after the lag any event is news again (a watch restarted from a list)": (
        [("send",), ("answer", "3"), ("wait", str(LAG + 1)), ("watch", "7")],
        [True],
        "7",
    ),
    "a failed write leaves the cache to the watch": (
        [("watch", "1"), ("send",), ("fail",), ("watch", "2")],
        [True, True],
        "2",
    ),
}


@pytest.mark.parametrize(("steps", "news", "cached"), CASES.values(), ids=CASES.keys())
def test_newest_objects(steps: list[Step], news: list[bool], cached: str) -> None:
    clock = Clock()
    objects: NewestObjects[tuple[str, str]] = NewestObjects(clock=clock, lag=LAG)
    seen: list[bool] = []
    for step in steps:
        match step:
            case ("watch", rv):
                seen.append(objects.watched(KEY, version(rv)))
            case ("send",):
                objects.sending(KEY)
            case ("answer", rv):
                objects.answered(KEY, version(rv))
            case ("fail",):
                objects.failed(KEY)
            case ("wait", seconds):
                clock.now += float(seconds)
    assert seen == news
    assert (objects.get(KEY) or {})["metadata"]["resourceVersion"] == cached


def test_forgetting_drops_the_object_and_its_writes() -> None:
    objects: NewestObjects[tuple[str, str]] = NewestObjects()
    objects.sending(KEY)
    objects.answered(KEY, version("3"))
    objects.forget(KEY)
    assert KEY not in objects
    assert objects.watched(KEY, version("2"))  # a new object of that name: news
