"""Fleet builders shared by the policy tests: VM views that read like the spec."""

from __future__ import annotations

from hypothesis import strategies as st

from virtualpod.core.qos import QOSClass
from virtualpod.core.spec import SuspendMode
from virtualpod.pressure.policy import VMState, VMView

MI = 1024**2


def vm(
    key: str,
    qos: QOSClass = QOSClass.BEST_EFFORT,
    *,
    priority: int = 0,
    request_mi: int = 0,
    usage_mi: int = 100,
    memory_mi: int | None = None,
    state: VMState = VMState.RUNNING,
    mode: SuspendMode = SuspendMode.SAVE,
) -> VMView:
    return VMView(
        key=key,
        namespace="default",
        name=key,
        qos_class=qos,
        priority=priority,
        memory_request_bytes=request_mi * MI,
        usage_bytes=usage_mi * MI,
        memory_bytes=(usage_mi if memory_mi is None else memory_mi) * MI,
        state=state,
        suspend_mode=mode,
    )


BE, BU, GU = QOSClass.BEST_EFFORT, QOSClass.BURSTABLE, QOSClass.GUARANTEED


@st.composite
def views(draw: st.DrawFn, key: str, states: tuple[VMState, ...] = (VMState.RUNNING,)) -> VMView:
    qos = draw(st.sampled_from(list(QOSClass)))
    request = 0 if qos is BE else draw(st.integers(16, 1024))
    usage = draw(st.integers(1, 2048))
    return vm(
        key,
        qos,
        priority=draw(st.integers(-1, 2)),
        request_mi=request,
        usage_mi=usage,
        memory_mi=draw(st.integers(0, 2048)),
        state=draw(st.sampled_from(states)),
        mode=draw(st.sampled_from([SuspendMode.SAVE, SuspendMode.SAVE, SuspendMode.PAUSE])),
    )


@st.composite
def fleets(
    draw: st.DrawFn,
    min_size: int = 0,
    max_size: int = 9,
    states: tuple[VMState, ...] = (VMState.RUNNING,),
) -> list[VMView]:
    size = draw(st.integers(min_size, max_size))
    return [draw(views(f"vm{i:02d}", states)) for i in range(size)]
