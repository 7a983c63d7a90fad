"""Rate groups: schedule table, member order, error containment, slips, validation."""

from __future__ import annotations

import pytest

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
