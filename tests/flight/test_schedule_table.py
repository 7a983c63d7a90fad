"""Schedule tables: TOML -> validated table -> rate groups bound by member name."""

from __future__ import annotations

import copy
import tomllib
from importlib import resources

import pytest

from flight.rate_group import RateGroupDriver, TickContext
from flight.schedule_table import (
    GroupEntry,
    ScheduleTableError,
    default_sil_table,
    load_schedule_table,
    preset_table_names,
)

BASE_NS = 100_000_000

VALID = {
    "base_period_ns": BASE_NS,
    "group": [
        {"name": "fast", "divisor": 1, "members": ["a.run", "b.run"]},
        {"name": "slow", "divisor": 4, "offset": 1, "members": ["c.run"]},
    ],
}


def _recording_registry(names, log):
    def make(name):
        def member(ctx: TickContext) -> None:
            log.append((name, ctx.tick, ctx.period_ns))

        return member

    return {name: make(name) for name in names}


def test_valid_dict_loads_with_default_offset():
    table = load_schedule_table(VALID)
    assert table.base_period_ns == BASE_NS
    assert table.groups == (
        GroupEntry("fast", 1, 0, ("a.run", "b.run")),
        GroupEntry("slow", 4, 1, ("c.run",)),
    )
    assert table.major_frame_ticks == 4 and table.member_names == ["a.run", "b.run", "c.run"]


def test_toml_file_and_dict_give_the_same_table(tmp_path):
    path = tmp_path / "bench.toml"
    path.write_text(
        'base_period_ns = 100_000_000\n'
        '[[group]]\nname = "fast"\ndivisor = 1\nmembers = ["a.run", "b.run"]\n'
        '[[group]]\nname = "slow"\ndivisor = 4\noffset = 1\nmembers = ["c.run"]\n'
    )
    from_file = load_schedule_table(path)
    assert from_file.groups == load_schedule_table(VALID).groups
    assert from_file.source == str(path) and load_schedule_table(str(path)).groups == from_file.groups


def test_default_sil_table_is_the_sil_wiring():
    table = default_sil_table()
    assert table.base_period_ns == 1_000_000_000
    assert [(g.name, g.divisor, g.offset) for g in table.groups] == [
        ("frame", 1, 0), ("housekeeping", 10, 0), ("store", 1, 0),
    ]
    frame = table.groups[0].members
    assert frame == (
        "nav.publish", "eps.publish", "thermal.publish", "gpu.publish", "radio.publish", "sequencer.run",
        "dispatcher.run", "modes.run", "power.run", "compute.collect", "inference.run", "assistant.run",
        "payload.run", "eps.commands", "gpu.commands", "nav.commands", "thermal.commands", "radio.commands",
        "ephemeris.commands", "sequencer.commands", "dispatcher.collect",
    )
    # A dispatched command is answered within its tick: routed before any component drains its
    # commands (modes and inference drain theirs in run), collected after all of them.
    drains = [i for i, m in enumerate(frame)
              if m.endswith(".commands") or m in ("modes.run", "inference.run", "assistant.run")]
    assert frame.index("sequencer.run") < frame.index("dispatcher.run") < min(drains) and frame.index("dispatcher.collect") > max(drains)
    assert table.groups[1].members == ("housekeeping.publish", "dispatcher.publish", "ephemeris.publish",
                                       "assistant.publish")
    assert table.groups[2].members == ("store.run", "downlink.run")
    assert table.major_frame_ticks == 10
    assert "sil" in preset_table_names()
    # Shipped as package data and readable as plain TOML.
    raw = tomllib.loads((resources.files("flight") / "schedules" / "sil.toml").read_text())
    assert load_schedule_table(raw).groups == table.groups


def test_bound_groups_run_the_hand_table_in_member_order():
    log: list = []
    table = load_schedule_table(VALID)
    driver = table.build_driver(_recording_registry(table.member_names, log))
    for tick in range(6):
        driver.tick(tick * BASE_NS)
    # By hand: fast every tick (a then b); slow (4, offset 1) on tick 1 and 5, period 400 ms.
    expected = []
    for tick in range(6):
        expected += [("a.run", tick, BASE_NS), ("b.run", tick, BASE_NS)]
        if tick in (1, 5):
            expected.append(("c.run", tick, 4 * BASE_NS))
    assert log == expected
    assert set(driver.telemetry()["fast"]["member_errors_by_member"]) == {"a.run", "b.run"}


def test_build_driver_base_period_override():
    table = load_schedule_table(VALID)
    registry = _recording_registry(table.member_names, [])
    assert table.build_driver(registry).base_period_ns == BASE_NS
    driver = table.build_driver(registry, base_period_ns=5 * BASE_NS, slip_event_throttle=2)
    assert isinstance(driver, RateGroupDriver) and driver.base_period_ns == 5 * BASE_NS
    assert driver.slip_event_throttle == 2


def test_bind_names_every_unknown_member_and_lists_the_known_ones():
    table = load_schedule_table(VALID)
    registry = _recording_registry(["a.run", "zz.run"], [])
    with pytest.raises(ScheduleTableError) as err:
        table.bind(registry)
    message = str(err.value)
    assert "'b.run' (group 'fast')" in message and "'c.run' (group 'slow')" in message
    assert "known: a.run, zz.run" in message
    with pytest.raises(ScheduleTableError, match="known: none"):
        table.bind({})


def test_bind_rejects_a_registry_entry_that_is_not_callable():
    table = load_schedule_table(VALID)
    registry = {**_recording_registry(table.member_names, []), "c.run": 42}
    with pytest.raises(ScheduleTableError, match="'c.run' is not callable"):
        table.bind(registry)


def _with(edit):
    data = copy.deepcopy(VALID)
    edit(data)
    return data


def _set_group(index, key, value):
    def edit(data):
        data["group"][index][key] = value

    return edit


def _drop_group_key(index, key):
    def edit(data):
        del data["group"][index][key]

    return edit


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda d: d.update(extra=1), r"unknown key 'extra'"),
        (lambda d: d.pop("base_period_ns"), r"missing key 'base_period_ns'"),
        (lambda d: d.update(base_period_ns=0), r"'base_period_ns' must be an int >= 1, got 0"),
        (lambda d: d.update(base_period_ns=1.0e8), r"'base_period_ns' must be an int"),
        (lambda d: d.update(base_period_ns=True), r"'base_period_ns' must be an int"),
        (lambda d: d.pop("group"), r"no \[\[group\]\] entries"),
        (lambda d: d.update(group=[]), r"'group' must be a non-empty array"),
        (lambda d: d.update(group={"name": "x"}), r"'group' must be a non-empty array"),
        (lambda d: d["group"].append("fast"), r"group\[2\] must be a table"),
        (_drop_group_key(0, "name"), r"group\[0\]: key 'name' must be a non-empty string, got None"),
        (_set_group(1, "name", ""), r"group\[1\]: key 'name' must be a non-empty string"),
        (_set_group(1, "name", 7), r"group\[1\]: key 'name' must be a non-empty string, got 7"),
        (_set_group(1, "name", "fast"), r"group 'fast' \(group\[1\]\): key 'name' is not unique"),
        (_set_group(0, "rate_hz", 10), r"group 'fast' \(group\[0\]\): unknown key 'rate_hz'"),
        (_drop_group_key(1, "divisor"), r"group 'slow' \(group\[1\]\): missing key 'divisor'"),
        (_set_group(1, "divisor", 0), r"group 'slow' \(group\[1\]\): key 'divisor' must be an int >= 1, got 0"),
        (_set_group(1, "divisor", 4.0), r"group 'slow' \(group\[1\]\): key 'divisor' must be an int"),
        (_set_group(1, "divisor", True), r"group 'slow' \(group\[1\]\): key 'divisor' must be an int"),
        (_set_group(1, "offset", 4), r"group 'slow' \(group\[1\]\): key 'offset' must be an int in \[0, divisor=4\), got 4"),
        (_set_group(1, "offset", -1), r"group 'slow' \(group\[1\]\): key 'offset' must be an int in \[0, divisor=4\)"),
        (_set_group(1, "offset", "1"), r"group 'slow' \(group\[1\]\): key 'offset' must be an int"),
        (_drop_group_key(0, "members"), r"group 'fast' \(group\[0\]\): missing key 'members'"),
        (_set_group(0, "members", []), r"group 'fast' \(group\[0\]\): key 'members' must be a non-empty list"),
        (_set_group(0, "members", "a.run"), r"group 'fast' \(group\[0\]\): key 'members' must be a non-empty list"),
        (_set_group(0, "members", ["a.run", 3]), r"group 'fast' \(group\[0\]\): key 'members' must hold non-empty strings, got 3"),
        (_set_group(0, "members", ["a.run", ""]), r"group 'fast' \(group\[0\]\): key 'members' must hold non-empty strings"),
        (_set_group(0, "members", ["a.run", "b.run", "a.run"]), r"group 'fast' \(group\[0\]\): key 'members' names 'a.run' more than once"),
    ],
)
def test_validation_errors_name_the_key_and_the_group(edit, pattern):
    with pytest.raises(ScheduleTableError, match=pattern) as err:
        load_schedule_table(_with(edit))
    assert str(err.value).startswith("schedule table <dict>")


def test_file_errors_name_the_file(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("base_period_ns = \n")
    with pytest.raises(ScheduleTableError, match=r"broken\.toml: not valid TOML"):
        load_schedule_table(broken)
    bad = tmp_path / "bad.toml"
    bad.write_text('base_period_ns = 1\n[[group]]\nname = "g"\ndivisor = 2\noffset = 2\nmembers = ["m"]\n')
    with pytest.raises(ScheduleTableError, match=r"bad\.toml: group 'g' \(group\[0\]\): key 'offset'"):
        load_schedule_table(bad)
    with pytest.raises(ScheduleTableError, match="file not found"):
        load_schedule_table(tmp_path / "missing.toml")
    with pytest.raises(ScheduleTableError, match=r"unknown schedule table 'nope'.*presets: .*sil"):
        load_schedule_table("nope")
    with pytest.raises(TypeError, match="str, Path or dict"):
        load_schedule_table(42)
