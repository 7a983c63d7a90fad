"""Free-running drive: cFS-SCH-style pacing and accounting, against a controllable fake clock."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flight.clock import MonotonicClock
from flight.free_running import FreeRunningDriver
from flight.rate_group import RateGroup, RateGroupDriver, RateGroupSpec, TickContext
from flight.schedule_table import load_schedule_table

P = 100_000_000  # base period, ns


class FakeClock:
    """Time moves only when a member spends it or when sleep_until is called.

    ``oversleep_ns[target]`` makes the sleep aimed at ``target`` wake that much late (a stalled
    host); ``wake_times`` records when each sleep_until returned.
    """

    def __init__(self, start_ns: int = 0) -> None:
        self.t_ns = start_ns
        self.oversleep_ns: dict[int, int] = {}
        self.sleep_targets: list[int] = []

    def now_ns(self) -> int:
        return self.t_ns

    def spend(self, dt_ns: int) -> None:
        self.t_ns += dt_ns

    def sleep_until(self, t_ns: int) -> int:
        self.sleep_targets.append(t_ns)
        if t_ns > self.t_ns:
            self.t_ns = t_ns + self.oversleep_ns.pop(t_ns, 0)
        return self.t_ns - t_ns


class Rig:
    """Groups fast (1), slow (4, offset 1) and hk (10), recording (group, tick, t_ns, clock time)."""

    def __init__(self, clock: FakeClock, costs_ns: dict[int, int] | None = None, **kwargs) -> None:
        self.clock = clock
        self.log: list[tuple[str, int, int, int]] = []
        self.wakeup_of_tick: dict[int, int] = {}  # fast tick -> how many sleeps preceded it
        self.events: list[tuple[str, str, str]] = []
        costs = costs_ns or {}

        def member(name):
            def run(ctx: TickContext) -> None:
                self.log.append((name, ctx.tick, ctx.t_ns, clock.now_ns()))
                if name == "fast":
                    self.wakeup_of_tick[ctx.tick] = len(clock.sleep_targets)
                    clock.spend(costs.get(ctx.tick, 0))

            return run

        self.groups = {
            "fast": RateGroup(RateGroupSpec("fast", 1), [member("fast")]),
            "slow": RateGroup(RateGroupSpec("slow", 4, 1), [member("slow")]),
            "hk": RateGroup(RateGroupSpec("hk", 10), [member("hk")]),
        }
        self.driver = RateGroupDriver(P, list(self.groups.values()),
                                      on_event=lambda *e: self.events.append(e))
        self.runner = FreeRunningDriver(self.driver, clock, **kwargs)

    def fast_ticks(self) -> list[int]:
        return [tick for name, tick, _, _ in self.log if name == "fast"]

    def ticks_by_wake_time(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for name, tick, _, at_ns in self.log:
            if name == "fast":
                out.setdefault(at_ns, []).append(tick)
        return out


def test_on_schedule_every_tick_runs_at_its_due_time():
    rig = Rig(FakeClock())
    assert rig.runner.run(n_ticks=20) == 20
    assert [(tick, t_ns, at) for _, tick, t_ns, at in rig.log if _ == "fast"] == [(k, k * P, k * P) for k in range(20)]
    # By hand: slow (4, offset 1) on 1, 5, 9, 13, 17; hk (10) on 0, 10.
    assert [t for n, t, _, _ in rig.log if n == "slow"] == [1, 5, 9, 13, 17]
    assert [t for n, t, _, _ in rig.log if n == "hk"] == [0, 10]
    assert rig.runner.telemetry() == {
        "wakeups": 20, "early_wakeups": 0, "ticks_run": 20, "late_ticks": 0, "max_lateness_ns": 0,
        "multiple_ticks_per_wakeup": 0, "skip_aheads": 0, "skipped_ticks": 0, "max_lag_ticks_seen": 0,
    }
    assert rig.clock.sleep_targets == [k * P for k in range(20)]
    assert rig.driver.skipped_ticks == 0 and rig.driver.frame_slips == 0


def test_lag_of_3_is_caught_up_in_one_wakeup():
    clock = FakeClock()
    clock.oversleep_ns[2 * P] = 3 * P + P // 2  # the wakeup for tick 2 comes at 5.5 P
    rig = Rig(clock)
    rig.runner.run(n_ticks=10)
    # By hand: at 5.5 P ticks 2, 3, 4, 5 are due (lag 3 <= 5): all run then; 6.. on time.
    assert rig.ticks_by_wake_time() == {0: [0], P: [1], 5 * P + P // 2: [2, 3, 4, 5],
                                        6 * P: [6], 7 * P: [7], 8 * P: [8], 9 * P: [9]}
    assert [t_ns for n, _, t_ns, _ in rig.log if n == "fast"] == [k * P for k in range(10)]  # scheduled times
    t = rig.runner.telemetry()
    assert (t["wakeups"], t["multiple_ticks_per_wakeup"], t["late_ticks"], t["max_lag_ticks_seen"]) == (7, 1, 4, 3)
    assert t["max_lateness_ns"] == 3 * P + P // 2 and t["skipped_ticks"] == 0
    assert rig.driver.skipped_ticks == 0 and rig.fast_ticks() == list(range(10))


def test_lag_of_12_with_catch_up_5_takes_three_wakeups():
    clock = FakeClock()
    clock.oversleep_ns[2 * P] = 12 * P + P // 2  # wake for tick 2 at 14.5 P: ticks 2..14 due, lag 12
    rig = Rig(clock, max_catch_up_ticks=5)
    rig.runner.run(n_ticks=20)
    # By hand (a wakeup per base-period boundary while behind, as SCH's timer):
    #   14.5 P: run 2..6 (5);  15 P: 7..15 due, run 7..11 (5);  16 P: 12..16 due, run all 5: caught up.
    by_time = rig.ticks_by_wake_time()
    assert by_time[14 * P + P // 2] == [2, 3, 4, 5, 6]
    assert by_time[15 * P] == [7, 8, 9, 10, 11]
    assert by_time[16 * P] == [12, 13, 14, 15, 16]
    assert by_time[17 * P] == [17]  # back on schedule
    t = rig.runner.telemetry()
    assert t["multiple_ticks_per_wakeup"] == 3 and t["max_lag_ticks_seen"] == 12
    assert t["skipped_ticks"] == 0 and rig.fast_ticks() == list(range(20))
    # Late: every tick run before 16 P's own due time, 2..15 (14 ticks); 16 runs exactly on time.
    assert t["late_ticks"] == 14


def test_lag_beyond_max_lag_skips_ahead_and_counts_exactly_what_was_skipped():
    clock = FakeClock()
    clock.oversleep_ns[3 * P] = 60 * P + P // 2  # wake for tick 3 at 63.5 P: ticks 3..63 due, lag 60
    rig = Rig(clock)  # max_lag 50, max_catch_up 5
    rig.runner.run(n_ticks=6)
    # By hand: lag 60 > 50, so ticks 3..62 are skipped (60) and tick 63 runs at 63.5 P.
    #   fast (1): 60 missed runs; slow (4, offset 1): 5, 9, ..., 61 -> 15; hk (10): 10, 20, ..., 60 -> 6.
    assert rig.fast_ticks() == [0, 1, 2, 63, 64, 65]
    assert rig.driver.skipped_ticks == 60 and rig.runner.skipped_ticks == 60 and rig.runner.skip_aheads == 1
    assert {n: g.skipped_ticks for n, g in rig.groups.items()} == {"fast": 60, "slow": 15, "hk": 6}
    assert rig.driver.telemetry()["slow"]["skipped_ticks"] == 15
    assert rig.driver.ticks == 66 and rig.driver.ticks_run == 6
    assert [(n, t) for n, t, _, _ in rig.log if n != "fast"] == [("hk", 0), ("slow", 1), ("slow", 65)]
    assert [t_ns for n, _, t_ns, _ in rig.log if n == "fast"][3:] == [63 * P, 64 * P, 65 * P]
    (skip_event,) = [e for e in rig.events if e[1] == "RATE_GROUP_TICKS_SKIPPED"]
    assert skip_event[0] == "WARNING_HI" and "skipped 60 base ticks [3, 63)" in skip_event[2]
    assert "fast 60, slow 15, hk 6" in skip_event[2]


def test_lag_of_exactly_max_lag_is_caught_up_not_skipped():
    clock = FakeClock()
    clock.oversleep_ns[P] = 50 * P  # wake for tick 1 at 51 P: ticks 1..51 due, lag 50
    rig = Rig(clock)
    rig.runner.run(n_ticks=80)
    assert rig.runner.skipped_ticks == 0 and rig.driver.skipped_ticks == 0
    assert rig.fast_ticks() == list(range(80))
    # Catch-up nets 4 ticks per period (5 run, 1 more due), so no wakeup runs more than 5.
    assert max(len(ticks) for ticks in rig.ticks_by_wake_time().values()) == 5


def test_member_overrunning_its_period_is_a_slip_and_the_next_tick_catches_up():
    clock = FakeClock()
    rig = Rig(clock, costs_ns={2: P + P // 2})  # tick 2 'takes' 150 ms on the fake clock
    rig.runner.run(n_ticks=6)
    fast = rig.groups["fast"]
    assert rig.driver.exec_timer == clock.now_ns  # installed from the pacing clock
    assert fast.cycle_slips == 1 and fast.max_exec_ns == P + P // 2 and rig.driver.frame_slips == 1
    (slip,) = [e for e in rig.events if e[1] == "RATE_GROUP_SLIP"]
    assert slip[0] == "WARNING_HI" and "fast" in slip[2] and "tick 2" in slip[2]
    # By hand: tick 2 ends at 3.5 P; the next wakeup is 4 P, where 3 (late by P) and 4 are due.
    assert rig.ticks_by_wake_time() == {0: [0], P: [1], 2 * P: [2], 4 * P: [3, 4], 5 * P: [5]}
    t = rig.runner.telemetry()
    assert (t["late_ticks"], t["max_lateness_ns"], t["multiple_ticks_per_wakeup"]) == (1, P, 1)


def test_run_until_and_resume_keep_one_schedule():
    clock = FakeClock(start_ns=7 * P + 3)  # the schedule starts at the first run
    rig = Rig(clock)
    assert rig.runner.run(until_ns=7 * P + 3 + 10 * P) == 10
    assert rig.runner.next_due_ns == 17 * P + 3
    assert rig.runner.run(n_ticks=5) == 5
    assert [t_ns for n, _, t_ns, _ in rig.log if n == "fast"] == [7 * P + 3 + k * P for k in range(15)]
    assert rig.fast_ticks() == list(range(15))
    assert rig.runner.run(n_ticks=0) == 0 and rig.runner.run(until_ns=0) == 0


def test_stop_from_a_member_ends_the_run():
    clock = FakeClock()
    holder: list[FreeRunningDriver] = []

    def stopper(ctx: TickContext) -> None:
        if ctx.tick == 3:
            holder[0].stop()

    driver = RateGroupDriver(P, [RateGroup(RateGroupSpec("g", 1), [stopper])])
    runner = FreeRunningDriver(driver, clock)
    holder.append(runner)
    assert runner.run() == 4 and driver.ticks == 4


def test_free_running_continues_a_driver_that_ran_in_lockstep():
    clock = FakeClock(start_ns=5 * P + P // 2)
    rig = Rig(clock)
    for k in range(3):
        rig.driver.tick(k * P)  # lockstep on the same time base
    rig.runner.run(n_ticks=2)
    # Ticks 3, 4 and 5 are due at 5.5 P: lag 2, caught up; n_ticks stops after two of them.
    assert rig.fast_ticks() == [0, 1, 2, 3, 4] and rig.driver.skipped_ticks == 0


def test_lockstep_and_free_running_run_the_same_groups_identically():
    table = load_schedule_table({
        "base_period_ns": P,
        "group": [
            {"name": "frame", "divisor": 1, "members": ["a", "b"]},
            {"name": "hk", "divisor": 10, "members": ["c"]},
            {"name": "odd", "divisor": 2, "offset": 1, "members": ["d"]},
        ],
    })

    def registry(log):
        def make(name):
            return lambda ctx: log.append((name, ctx.tick, ctx.t_ns, ctx.period_ns))

        return {name: make(name) for name in table.member_names}

    lockstep_log: list = []
    lockstep = table.build_driver(registry(lockstep_log))
    for k in range(40):
        lockstep.tick(k * P)
    free_log: list = []
    free = table.build_driver(registry(free_log))
    FreeRunningDriver(free, FakeClock()).run(n_ticks=40)
    assert free_log == lockstep_log
    assert free.telemetry() == lockstep.telemetry()


def test_no_wall_clock_is_read(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("wall clock read")

    for name in ("time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns", "sleep"):
        monkeypatch.setattr(time, name, forbidden)
    clock = FakeClock()
    clock.oversleep_ns[2 * P] = 70 * P
    rig = Rig(clock, costs_ns={5: 2 * P})
    rig.runner.run(n_ticks=30)
    assert rig.runner.ticks_run == 30


def test_monotonic_clock_fits_with_injected_time():
    fake = FakeClock()
    clock = MonotonicClock(monotonic_ns=fake.now_ns, sleep_s=lambda s: fake.spend(round(s * 1e9)))
    driver = RateGroupDriver(P, [RateGroup(RateGroupSpec("g", 1), [lambda ctx: None])])
    runner = FreeRunningDriver(driver, clock)
    assert runner.run(n_ticks=5) == 5
    assert fake.t_ns == 4 * P and runner.late_ticks == 0 and runner.wakeups == 5


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [({"max_catch_up_ticks": 0}, "max_catch_up_ticks"), ({"max_lag_ticks": -1}, "max_lag_ticks"),
     ({"late_tolerance_ns": -1}, "late_tolerance_ns"), ({"max_catch_up_ticks": 2.0}, "max_catch_up_ticks")],
)
def test_parameter_validation(kwargs, pattern):
    driver = RateGroupDriver(P, [])
    with pytest.raises(ValueError, match=pattern):
        FreeRunningDriver(driver, FakeClock(), **kwargs)


def test_bad_driver_or_clock_or_run_arguments():
    driver = RateGroupDriver(P, [])
    with pytest.raises(TypeError, match="RateGroupDriver"):
        FreeRunningDriver(object(), FakeClock())
    with pytest.raises(TypeError, match="sleep_until"):
        FreeRunningDriver(driver, object())
    runner = FreeRunningDriver(driver, FakeClock())
    with pytest.raises(ValueError, match="n_ticks"):
        runner.run(n_ticks=-1)
    with pytest.raises(ValueError, match="until_ns"):
        runner.run(until_ns=1.5)


@settings(max_examples=40, deadline=None)
@given(
    stalls=st.dictionaries(st.integers(0, 60), st.integers(0, 90 * P), max_size=4),
    costs=st.dictionaries(st.integers(0, 60), st.integers(0, 8 * P), max_size=4),
    max_catch_up=st.integers(1, 6),
    max_lag=st.integers(0, 30),
)
def test_every_tick_index_runs_once_or_is_counted_skipped(stalls, costs, max_catch_up, max_lag):
    clock = FakeClock()
    clock.oversleep_ns = {k * P: extra for k, extra in stalls.items()}
    rig = Rig(clock, costs_ns=costs, max_catch_up_ticks=max_catch_up, max_lag_ticks=max_lag)
    rig.runner.run(n_ticks=40)
    driver, runner = rig.driver, rig.runner
    ran = rig.fast_ticks()
    assert ran == sorted(set(ran)) and len(ran) == 40
    assert len(ran) + driver.skipped_ticks == driver.ticks == ran[-1] + 1
    assert runner.skipped_ticks == driver.skipped_ticks
    assert all(t_ns == k * P for n, k, t_ns, _ in rig.log)  # members always see the scheduled time
    for name, group in rig.groups.items():  # runs + missed runs = what the schedule called for
        assert group.cycles + group.skipped_ticks == group.spec.runs_between(0, driver.ticks)
    per_wakeup: dict[int, int] = {}
    for wakeup in rig.wakeup_of_tick.values():
        per_wakeup[wakeup] = per_wakeup.get(wakeup, 0) + 1
    assert max(per_wakeup.values()) <= max_catch_up
    assert runner.multiple_ticks_per_wakeup == sum(1 for n in per_wakeup.values() if n > 1)
    assert runner.wakeups == len(clock.sleep_targets)
