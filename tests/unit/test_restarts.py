"""kubelet's crash-loop back-off, as a table (defaults: 10s doubling to 5m, reset 10m)."""

import pytest

from virtualpod.core.restarts import crash_loop_over, restart_delay
from virtualpod.core.settings import RestartBackoff

DEFAULTS = RestartBackoff()


@pytest.mark.parametrize(
    ("streak", "delay"),
    [(0, 0.0), (1, 10.0), (2, 20.0), (3, 40.0), (5, 160.0), (6, 300.0), (50, 300.0)],
)
def test_restart_delay(streak: int, delay: float) -> None:
    assert restart_delay(DEFAULTS, streak) == delay


@pytest.mark.parametrize(("ran_for", "over"), [(0.0, False), (599.9, False), (600.0, True)])
def test_a_long_run_ends_the_crash_loop(ran_for: float, over: bool) -> None:
    assert crash_loop_over(DEFAULTS, ran_for) is over
