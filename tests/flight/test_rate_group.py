"""Rate groups: schedule table, member order, error containment, slips, validation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flight.rate_group import RateGroup, RateGroupDriver, RateGroupSpec, TickContext

BASE_NS = 100_000_000  # 10 Hz base tick


def _recorder(log: list, label: str):
    def member(ctx: TickContext) -> None:
        log.append((label, ctx.tick, ctx.t_ns, ctx.period_ns))

    member.__qualname__ = label
    return member


def test_schedule_over_12_ticks_matches_hand_table():
    log: list = []
    specs = [RateGroupSpec("fast", 1), RateGroupSpec("half", 2, 1), RateGroupSpec("slow", 4), RateGroupSpec("third", 3, 2)]
    groups = [RateGroup(spec, [_recorder(log, spec.name)]) for spec in specs]
    driver = RateGroupDriver(BASE_NS, groups)
    for tick in range(12):
        driver.tick(tick * BASE_NS)
    # Written by hand: which groups run on each tick, in table order.
    hand_table = {
        0: ["fast", "slow"],
        1: ["fast", "half"],
        2: ["fast", "third"],
        3: ["fast", "half"],
        4: ["fast", "slow"],
        5: ["fast", "half", "third"],
        6: ["fast"],
        7: ["fast", "half"],
        8: ["fast", "slow", "third"],
        9: ["fast", "half"],
        10: ["fast"],
        11: ["fast", "half", "third"],
    }
    expected = [
        (name, tick, tick * BASE_NS, BASE_NS * {"fast": 1, "half": 2, "slow": 4, "third": 3}[name])
        for tick in range(12)
        for name in hand_table[tick]
    ]
    assert log == expected
    telemetry = driver.telemetry()
    assert {name: t["cycles"] for name, t in telemetry.items()} == {"fast": 12, "half": 6, "slow": 3, "third": 4}
    assert driver.ticks == 12 and driver.frame_slips == 0 and driver.skipped_ticks == 0


def test_members_run_in_order():
    log: list = []
    group = RateGroup(RateGroupSpec("g", 1), [_recorder(log, name) for name in "cab"])
    RateGroupDriver(BASE_NS, [group]).tick(0)
    assert [entry[0] for entry in log] == ["c", "a", "b"]


def test_member_exception_is_counted_and_others_still_run():
    log: list = []

    def broken(ctx: TickContext) -> None:
        raise RuntimeError(f"sensor read failed at tick {ctx.tick}")

    first = RateGroup(RateGroupSpec("first", 1), [_recorder(log, "before"), broken, _recorder(log, "after")])
    second = RateGroup(RateGroupSpec("second", 2), [_recorder(log, "other")])
    driver = RateGroupDriver(BASE_NS, [first, second])
    for tick in range(4):
        driver.tick(tick * BASE_NS)
    assert [entry[0] for entry in log if entry[1] == 0] == ["before", "after", "other"]
    assert [entry[0] for entry in log].count("after") == 4
    assert first.member_errors == [0, 4, 0]
    assert driver.error_count == 4
    assert [e.tick for e in driver.errors] == [0, 1, 2, 3]
    last = driver.errors[-1]
    assert last.group == "first" and "broken" in last.member
    assert last.error == "RuntimeError: sensor read failed at tick 3"
    telemetry = driver.telemetry()
    assert telemetry["first"]["member_errors"] == 4 and telemetry["second"]["member_errors"] == 0
    assert telemetry["first"]["member_errors_by_member"][last.member] == 4


def test_error_list_is_bounded():
    def broken(ctx: TickContext) -> None:
        raise ValueError("x")

    group = RateGroup(RateGroupSpec("g", 1), [broken])
    driver = RateGroupDriver(BASE_NS, [group])
    for tick in range(500):
        driver.tick(tick * BASE_NS)
    assert driver.error_count == 500 and group.member_errors == [500]
    assert 0 < len(driver.errors) < 500
    assert driver.errors[-1].tick == 499


class FakeTimer:
    """Exec timer that advances by a scripted amount whenever a member runs."""

    def __init__(self) -> None:
        self.now_ns = 0

    def __call__(self) -> int:
        return self.now_ns


def test_cycle_slip_counted_with_fake_exec_timer():
    timer = FakeTimer()
    costs_ns = {0: 50_000_000, 1: 150_000_000, 2: 100_000_000, 3: 100_000_001}

    def work(ctx: TickContext) -> None:
        timer.now_ns += costs_ns[ctx.tick]

    fast = RateGroup(RateGroupSpec("fast", 1), [work])
    slow = RateGroup(RateGroupSpec("slow", 2), [lambda ctx: None])
    driver = RateGroupDriver(BASE_NS, [fast, slow], exec_timer=timer)
    for tick in range(4):
        driver.tick(tick * BASE_NS)
    # Period 100 ms: ticks 1 (150 ms) and 3 (100 ms + 1 ns) overran; exactly 100 ms did not.
    assert fast.cycle_slips == 2
    assert fast.max_exec_ns == 150_000_000 and fast.last_exec_ns == 100_000_001
    assert slow.cycle_slips == 0 and slow.max_exec_ns == 0
    assert driver.frame_slips == 2
    assert driver.telemetry()["fast"]["cycle_slips"] == 2


def test_without_exec_timer_exec_time_is_zero():
    def slow_member(ctx: TickContext) -> None:
        sum(range(10_000))

    group = RateGroup(RateGroupSpec("g", 1), [slow_member])
    driver = RateGroupDriver(1, [group])  # 1 ns period: any real measurement would slip
    driver.tick(0)
    assert group.max_exec_ns == 0 and group.cycle_slips == 0


def test_reentrant_tick_is_refused_and_counted():
    driver_holder: list[RateGroupDriver] = []
    log: list = []

    def reenter(ctx: TickContext) -> None:
        log.append(ctx.tick)
        driver_holder[0].tick(ctx.t_ns + BASE_NS)

    group = RateGroup(RateGroupSpec("g", 1), [reenter])
    driver = RateGroupDriver(BASE_NS, [group])
    driver_holder.append(driver)
    driver.tick(0)
    driver.tick(BASE_NS)
    assert log == [0, 1]  # the nested calls ran nothing
    assert driver.refused_ticks == 2 and driver.frame_slips == 2 and driver.ticks == 2


def test_table_change_from_a_member_waits_for_frame_boundary():
    log: list = []
    replacement = RateGroup(RateGroupSpec("new", 1), [_recorder(log, "new")])
    holder: list[RateGroupDriver] = []

    def switch(ctx: TickContext) -> None:
        log.append(("switch", ctx.tick))
        holder[0].set_groups([replacement])

    driver = RateGroupDriver(BASE_NS, [RateGroup(RateGroupSpec("old", 1), [switch, _recorder(log, "old")])])
    holder.append(driver)
    driver.tick(0)
    driver.tick(BASE_NS)
    assert [entry[0] for entry in log] == ["switch", "old", "new"]


def test_skipped_ticks_counted_from_time_gaps():
    driver = RateGroupDriver(BASE_NS, [RateGroup(RateGroupSpec("g", 1), [])])
    for t_ns in [0, BASE_NS, 2 * BASE_NS + 30_000_000, 5 * BASE_NS]:
        driver.tick(t_ns)
    assert driver.skipped_ticks == 1  # 230 ms -> 500 ms: 2 periods and more passed, 1 missed
    with pytest.raises(ValueError, match="backwards"):
        driver.tick(4 * BASE_NS)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "g", "divisor": 0}, "divisor"),
        ({"name": "g", "divisor": 2.0}, "divisor"),
        ({"name": "g", "divisor": 4, "offset": 4}, "offset"),
        ({"name": "g", "divisor": 4, "offset": -1}, "offset"),
        ({"name": "", "divisor": 1}, "name"),
    ],
)
def test_spec_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"RateGroupSpec\.{field}"):
        RateGroupSpec(**kwargs)


def test_driver_validation():
    with pytest.raises(ValueError, match="base_period_ns"):
        RateGroupDriver(0, [])
    same = RateGroupSpec("dup", 1)
    with pytest.raises(ValueError, match="dup"):
        RateGroupDriver(BASE_NS, [RateGroup(same, []), RateGroup(same, [])])
    with pytest.raises(TypeError, match="member 1"):
        RateGroup(same, [lambda ctx: None, 42])


# --- slip events, throttle ---------------------------------------------------------------------


class EventLog:
    """An on_event callback that records (severity, name, text)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def __call__(self, severity: str, name: str, text: str) -> None:
        self.events.append((severity, name, text))

    def named(self, name: str) -> list[tuple[str, str, str]]:
        return [e for e in self.events if e[1] == name]


def _slipping_driver(throttle: int = 5):
    """Group 'fast' (100 ms) always takes 250 ms on the fake timer; 'calm' never slips."""
    timer = FakeTimer()

    def heavy(ctx: TickContext) -> None:
        timer.now_ns += 250_000_000

    log = EventLog()
    fast = RateGroup(RateGroupSpec("fast", 1), [heavy])
    calm = RateGroup(RateGroupSpec("calm", 5), [lambda ctx: None])
    driver = RateGroupDriver(BASE_NS, [fast, calm], exec_timer=timer, on_event=log, slip_event_throttle=throttle)
    return driver, fast, calm, log


def test_slip_events_are_throttled_and_suppressed_ones_counted():
    driver, fast, calm, log = _slipping_driver()
    for tick in range(8):
        driver.tick(tick * BASE_NS)
    slips = log.named("RATE_GROUP_SLIP")
    assert fast.cycle_slips == 8  # every slip counted ...
    assert len(slips) == 5  # ... 5 reported (the F Prime default throttle) ...
    assert fast.slip_events_suppressed == 3  # ... and the other 3 counted, not lost
    assert all(severity == "WARNING_HI" for severity, _, _ in slips)
    assert "fast" in slips[0][2] and "tick 0" in slips[0][2] and "250000000" in slips[0][2]
    assert "suppressed" not in slips[3][2] and "suppressed" in slips[4][2]  # the last one says so
    assert driver.telemetry()["fast"]["slip_events_suppressed"] == 3
    assert driver.telemetry()["calm"]["slip_events_suppressed"] == 0 and calm.cycle_slips == 0

    driver.reset_throttle()
    for tick in range(8, 10):
        driver.tick(tick * BASE_NS)
    assert len(log.named("RATE_GROUP_SLIP")) == 7 and fast.slip_events_suppressed == 3  # cumulative
    assert "tick 9" in log.named("RATE_GROUP_SLIP")[-1][2]


def test_reset_throttle_by_group_name():
    driver, fast, _, log = _slipping_driver(throttle=2)
    for tick in range(3):
        driver.tick(tick * BASE_NS)
    assert len(log.named("RATE_GROUP_SLIP")) == 2 and fast.slip_events_suppressed == 1
    driver.reset_throttle("fast")
    driver.tick(3 * BASE_NS)
    assert len(log.named("RATE_GROUP_SLIP")) == 3
    with pytest.raises(KeyError, match="nope.*fast, calm"):
        driver.reset_throttle("nope")


def test_zero_throttle_reports_nothing_but_counts_everything():
    driver, fast, _, log = _slipping_driver(throttle=0)
    for tick in range(4):
        driver.tick(tick * BASE_NS)
    assert log.named("RATE_GROUP_SLIP") == [] and fast.cycle_slips == 4 and fast.slip_events_suppressed == 4


def test_slip_events_reach_the_bus_through_event_reporter():
    from flight.bus import Bus
    from flight.events import EventReporter

    bus = Bus(lambda: 0, name="rate-group-events")
    try:
        events_sub = bus.subscribe(["evt."], name="evt")
        bus.settle()
        reporter = EventReporter(bus, "scheduler")
        timer = FakeTimer()

        def heavy(ctx: TickContext) -> None:
            timer.now_ns += 2 * BASE_NS

        driver = RateGroupDriver(BASE_NS, [RateGroup(RateGroupSpec("g", 1), [heavy])],
                                 exec_timer=timer, on_event=reporter.emit, slip_event_throttle=2)
        for tick in range(3):
            driver.tick(tick * BASE_NS)
        bodies = [m.body for m in events_sub.drain() if m.topic == "evt.scheduler"]
        assert [(b["severity"], b["name"]) for b in bodies] == [("WARNING_HI", "RATE_GROUP_SLIP")] * 2
        assert reporter.counts == {"RATE_GROUP_SLIP": 2} and driver.telemetry()["g"]["slip_events_suppressed"] == 1
    finally:
        bus.close()


def test_failing_event_callback_is_counted_and_the_schedule_goes_on():
    timer = FakeTimer()
    log: list = []

    def heavy(ctx: TickContext) -> None:
        timer.now_ns += 2 * BASE_NS
        log.append(ctx.tick)

    def broken_events(severity: str, name: str, text: str) -> None:
        raise ConnectionError("bus closed")

    driver = RateGroupDriver(BASE_NS, [RateGroup(RateGroupSpec("g", 1), [heavy])],
                             exec_timer=timer, on_event=broken_events)
    for tick in range(3):
        driver.tick(tick * BASE_NS)
    assert log == [0, 1, 2] and driver.event_errors == 3 and driver.frame_slips == 3


# --- skipped ticks ---------------------------------------------------------------------------


def test_gap_in_tick_times_skips_tick_indices_and_counts_missed_runs_per_group():
    log: list = []
    every = RateGroup(RateGroupSpec("every", 1), [_recorder(log, "every")])
    even = RateGroup(RateGroupSpec("even", 2), [_recorder(log, "even")])
    fourth = RateGroup(RateGroupSpec("fourth", 4, 3), [_recorder(log, "fourth")])
    events = EventLog()
    driver = RateGroupDriver(BASE_NS, [every, even, fourth], on_event=events)
    driver.tick(0)
    driver.tick(BASE_NS)
    driver.tick(5 * BASE_NS)  # ticks 2, 3, 4 never ran
    # By hand: skipped ticks {2, 3, 4}; 'even' runs on 2 and 4; 'fourth' (offset 3) on 3.
    assert driver.skipped_ticks == 3 and driver.ticks == 6 and driver.ticks_run == 3
    assert (every.skipped_ticks, even.skipped_ticks, fourth.skipped_ticks) == (3, 2, 1)
    assert [(label, tick) for label, tick, _, _ in log] == [("every", 0), ("even", 0), ("every", 1), ("every", 5)]
    assert driver.telemetry()["even"]["skipped_ticks"] == 2
    (skip_event,) = events.named("RATE_GROUP_TICKS_SKIPPED")
    assert skip_event[0] == "WARNING_HI" and "skipped 3 base ticks [2, 5)" in skip_event[2]


def test_skip_ticks_keeps_time_consistent_so_the_next_tick_is_not_counted_twice():
    group = RateGroup(RateGroupSpec("tenth", 10, 4), [])
    driver = RateGroupDriver(BASE_NS, [group])
    driver.tick(0)
    missed = driver.skip_ticks(25)  # ticks 1..25; 'tenth' (offset 4) was due on 4, 14, 24
    assert missed == {"tenth": 3} and group.skipped_ticks == 3
    assert driver.last_tick_t_ns == 25 * BASE_NS
    driver.tick(26 * BASE_NS)
    assert driver.skipped_ticks == 25 and driver.ticks == 27
    with pytest.raises(ValueError, match="n_ticks"):
        driver.skip_ticks(-1)


@given(
    divisor=st.integers(1, 12),
    data=st.data(),
    first=st.integers(0, 200),
    n=st.integers(0, 200),
)
def test_runs_between_matches_enumeration(divisor, data, first, n):
    spec = RateGroupSpec("g", divisor, data.draw(st.integers(0, divisor - 1)))
    assert spec.runs_between(first, first + n) == sum(spec.runs_on(t) for t in range(first, first + n))


# --- table changes at major-frame boundaries ---------------------------------------------------


def test_requested_table_waits_for_the_major_frame_boundary():
    log: list = []
    old = [
        RateGroup(RateGroupSpec("a", 4, 3), [_recorder(log, "a")]),
        RateGroup(RateGroupSpec("b", 6), [_recorder(log, "b")]),
    ]
    new = [RateGroup(RateGroupSpec("c", 1), [_recorder(log, "c")])]
    events = EventLog()
    driver = RateGroupDriver(BASE_NS, old, on_event=events)
    assert driver.major_frame_ticks == 12  # lcm(4, 6)
    for tick in range(5):
        driver.tick(tick * BASE_NS)
    driver.request_table(new)
    assert [g.name for g in driver.pending_table] == ["c"] and [g.name for g in driver.groups] == ["a", "b"]
    for tick in range(5, 12):
        driver.tick(tick * BASE_NS)
    assert driver.pending_table is not None  # tick 11 still belongs to the old frame
    driver.tick(12 * BASE_NS)
    assert driver.pending_table is None and [g.name for g in driver.groups] == ["c"]
    assert driver.table_switches == 1 and driver.major_frame_ticks == 1
    # The old groups ran whole cycles only: a (4, offset 3) on 3, 7, 11; b (6) on 0, 6.
    assert [t for label, t, _, _ in log if label == "a"] == [3, 7, 11]
    assert [t for label, t, _, _ in log if label == "b"] == [0, 6]
    assert [t for label, t, _, _ in log if label == "c"] == [12]
    (switched,) = events.named("RATE_GROUP_TABLE_SWITCHED")
    assert switched[0] == "ACTIVITY_HI" and "tick 12" in switched[2]


@settings(max_examples=60, deadline=None)
@given(
    old_table=st.lists(st.tuples(st.integers(1, 8), st.integers(0, 7)), min_size=1, max_size=4),
    request_after=st.integers(0, 60),
)
def test_no_group_runs_a_partial_cycle_across_a_switch(old_table, request_after):
    log: list = []
    old = [
        RateGroup(RateGroupSpec(f"old{i}", d, o % d), [_recorder(log, f"old{i}")])
        for i, (d, o) in enumerate(old_table)
    ]
    driver = RateGroupDriver(BASE_NS, old)
    frame = driver.major_frame_ticks
    tick = 0
    for tick in range(request_after):
        driver.tick(tick * BASE_NS)
    driver.request_table([RateGroup(RateGroupSpec("new", 1), [_recorder(log, "new")])])
    for tick in range(request_after, request_after + frame + 1):
        driver.tick(tick * BASE_NS)
    switch_tick = min(t for label, t, _, _ in log if label == "new")
    assert switch_tick % frame == 0 and request_after <= switch_tick < request_after + frame + 1
    for i, (d, _) in enumerate(old_table):
        runs = [t for label, t, _, _ in log if label == f"old{i}"]
        assert max(runs, default=-1) < switch_tick
        assert len(runs) == switch_tick // d  # whole major frames: frame / d runs in each


def test_set_groups_is_immediate_only_when_idle_on_a_boundary():
    a, b = RateGroup(RateGroupSpec("a", 2), []), RateGroup(RateGroupSpec("b", 1), [])
    driver = RateGroupDriver(BASE_NS, [a])
    driver.set_groups([b])  # before the first tick: tick 0 is a boundary
    assert driver.groups == [b] and driver.pending_table is None
    driver.set_groups([a])  # b has divisor 1: every tick is a boundary
    assert driver.groups == [a]
    driver.tick(0)
    driver.set_groups([b])  # next tick is 1, inside a's 2-tick frame
    assert driver.groups == [a] and driver.pending_table == [b]
    driver.tick(BASE_NS)
    assert driver.groups == [a]
    driver.tick(2 * BASE_NS)
    assert driver.groups == [b]


def test_pending_table_switches_at_a_boundary_inside_a_skip():
    old = [RateGroup(RateGroupSpec("old", 4, 1), [])]
    new = [RateGroup(RateGroupSpec("new", 3, 2), [])]
    driver = RateGroupDriver(BASE_NS, old)
    driver.tick(0)
    driver.request_table(new)
    missed = driver.skip_ticks(9)  # ticks 1..9; the boundary is tick 4
    # By hand: 'old' (4, offset 1) missed tick 1; 'new' (3, offset 2) missed 5 and 8.
    assert missed == {"old": 1, "new": 2}
    assert old[0].skipped_ticks == 1 and new[0].skipped_ticks == 2
    assert driver.groups == new and driver.pending_table is None


def test_frame_slips_keep_the_slips_of_groups_that_left_the_table():
    timer = FakeTimer()

    def heavy(ctx: TickContext) -> None:
        timer.now_ns += 2 * BASE_NS

    driver = RateGroupDriver(BASE_NS, [RateGroup(RateGroupSpec("heavy", 1), [heavy])], exec_timer=timer)
    driver.tick(0)
    driver.tick(BASE_NS)
    driver.set_groups([RateGroup(RateGroupSpec("light", 1), [])])
    driver.tick(2 * BASE_NS)
    assert driver.frame_slips == 2 and driver.counters()["frame_slips"] == 2


def test_explicit_member_names_label_errors_and_telemetry():
    def broken(ctx: TickContext) -> None:
        raise RuntimeError("boom")

    group = RateGroup(RateGroupSpec("g", 1), [broken, lambda ctx: None], member_names=["eps.publish", "x.run"])
    driver = RateGroupDriver(BASE_NS, [group])
    driver.tick(0)
    assert driver.errors[0].member == "eps.publish"
    assert driver.telemetry()["g"]["member_errors_by_member"] == {"eps.publish": 1, "x.run": 0}
    with pytest.raises(ValueError, match="2 member names for 1 members"):
        RateGroup(RateGroupSpec("g", 1), [broken], member_names=["a", "b"])
    with pytest.raises(ValueError, match="'a'.*twice"):
        RateGroup(RateGroupSpec("g", 1), [broken, broken], member_names=["a", "a"])


def test_driver_counters():
    driver = RateGroupDriver(BASE_NS, [RateGroup(RateGroupSpec("g", 3), [])])
    driver.tick(0)
    driver.tick(3 * BASE_NS)
    assert driver.counters() == {
        "ticks": 4, "ticks_run": 2, "skipped_ticks": 2, "refused_ticks": 0, "frame_slips": 0,
        "member_errors": 0, "event_errors": 0, "skip_events_suppressed": 0, "table_switches": 0,
        "major_frame_ticks": 3, "table_pending": False,
    }
