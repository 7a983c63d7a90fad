"""The dictionary: loading errors name the file and key; declarations match what the code does."""

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flight.command_status import CommandRejected
from flight.dictionary import DictionaryError, default_dictionary, load_dictionary
from sim.sil import SilRun

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sil_messages(tmp_path_factory):
    """Every message of 200 s of the default SIL stack (modeled compute)."""
    from sim.scenario import load_scenario

    run = SilRun(load_scenario("starcloud1"), tmp_path_factory.mktemp("dict-run"), compute="modeled")
    sub = run.bus.subscribe([""], hwm=1_000_000, name="dictionary-check")
    run.bus.settle()
    messages = []
    for _ in range(200):
        run.step()
        messages.extend(sub.drain())
    run.close()
    return messages


def test_every_published_channel_is_declared_and_conforms(sil_messages):
    dictionary = default_dictionary()
    seen = set()
    for message in sil_messages:
        if not message.topic.startswith("tlm."):
            continue
        component = message.topic[4:]
        for key, value in message.body.items():
            channel = dictionary.channel(f"{component}.{key}")
            assert channel is not None, f"{message.topic} publishes undeclared channel {key!r}"
            problem = channel.conforms(value)
            assert problem is None, f"{component}.{key} {problem}"
            seen.add(f"{component}.{key}")
    # And nothing declared for these components is stale.
    published_components = {name.split(".")[0] for name in seen}
    declared = {n for n, c in dictionary.channels.items() if c.component in published_components}
    assert declared - seen == set()


def test_every_emitted_event_is_declared_with_its_severity(sil_messages):
    dictionary = default_dictionary()
    for message in sil_messages:
        if message.topic.startswith("evt."):
            declared = dictionary.event(message.topic[4:], message.body["name"])
            assert declared is not None and declared.severity == message.body["severity"]


def test_every_emit_in_the_source_names_a_declared_event():
    # Events that a short run never raises are checked from the source: the literal
    # emit("SEVERITY", "NAME", ...) calls of each component.
    dictionary = default_dictionary()
    pattern = re.compile(r'emit\(\s*"([A-Z_]+)",\s*"([A-Z_]+)"')
    sources = {"flight/modes.py": "modes", "flight/power_manager.py": "power", "flight/training_job.py": "training",
               "flight/inference_job.py": "inference", "flight/dispatcher.py": "dispatcher",
               "flight/rate_group.py": "scheduler", "flight/sequencer.py": "sequencer",
               "flight/downlink.py": "downlink"}
    found = 0
    for path, component in sources.items():
        for severity, name in pattern.findall((REPO / path).read_text()):
            declared = dictionary.event(component, name)
            assert declared is not None, f"{path}: {component}.{name} not declared"
            assert declared.severity == severity, f"{path}: {component}.{name}"
            found += 1
    assert found >= 15


def test_undeclared_event_or_wrong_severity_is_refused():
    from flight.bus import Bus
    from flight.events import EventReporter

    with Bus(lambda: 0, name="events-test") as bus:
        events = EventReporter(bus, "modes")
        with pytest.raises(ValueError, match="not declared"):
            events.emit("ACTIVITY_HI", "NO_SUCH_EVENT", "x")
        with pytest.raises(ValueError, match="declared ACTIVITY_HI"):
            events.emit("FATAL", "MODE_CHANGED", "x")


def test_throttled_event_is_counted_not_sent(tmp_path):
    from flight.bus import Bus
    from flight.events import EventReporter

    (tmp_path / "noisy.toml").write_text('[events]\nLOUD = { severity = "WARNING_LO", throttle = 3 }\n')
    with Bus(lambda: 0, name="throttle-test") as bus:
        events = EventReporter(bus, "noisy", load_dictionary(tmp_path))
        sub = bus.subscribe(["evt.noisy"], name="events")
        bus.settle()
        sent = [events.emit("WARNING_LO", "LOUD", str(i)) for i in range(10)]
        assert sent == [True] * 3 + [False] * 7
        assert len(sub.drain()) == 3 and events.suppressed == {"LOUD": 7}
        events.reset_throttles()
        assert events.emit("WARNING_LO", "LOUD", "again")


def test_export_is_json_with_every_component():
    data = json.loads(json.dumps(default_dictionary().to_json()))
    components = data["components"]
    assert {"eps", "gpu", "modes", "dispatcher", "inference"} <= set(components)
    switch = components["eps"]["commands"]["SET_SWITCH"]
    assert switch["hazardous"] is True and [a["name"] for a in switch["args"]] == ["switch", "on"]
    assert components["eps"]["telemetry"]["battery_soc"]["red_low"] == 0.30
    assert "NOOP" in components["nav"]["commands"]


@pytest.mark.parametrize("text, fragment", [
    ('[commands.GO]\nargs = []\n', "declares commands but not 'commandable = true'"),
    ('commandable = true\n[commands.GO]\nargs = [{ name = "x", type = "complex" }]\n', "args[0].type"),
    ('commandable = true\n[commands.GO]\nargs = [{ name = "x", type = "float", min = 5, max = 1 }]\n', "min 5 > max 1"),
    ('commandable = true\n[commands.GO]\nargs = [{ name = "x", type = "enum" }]\n', "args[0].values"),
    ('commandable = true\n[commands.GO]\nargs = [{ name = "x", type = "int", min = 0, max = 9, default = 12 }]\n',
     "args[0].default"),
    ('commandable = true\n[commands.go]\n', "UPPER_SNAKE_CASE"),
    ('commandable = true\n[commands.NOOP]\n', "built in"),
    ('colour = "red"\n', "unknown key 'colour'"),
    ('[telemetry]\nx = { type = "float", red_low = 5, yellow_low = 1 }\n', "limits must be ordered"),
    ('[telemetry]\nx = { type = "float", unit = "W" }\n', "telemetry.x: unknown key 'unit'"),
    ('[events]\nE = { severity = "LOUD" }\n', "events.E.severity"),
    ('downlink = "sometimes"\n', "downlink"),
    ('description = 5\n', "description: must be str"),
    ('this is not toml', "not valid TOML"),
])
def test_malformed_dictionary_files_name_file_and_key(tmp_path, text, fragment):
    (tmp_path / "widget.toml").write_text(text)
    with pytest.raises(DictionaryError) as info:
        load_dictionary(tmp_path)
    assert "widget.toml" in str(info.value) and fragment in str(info.value)


def test_argument_validation_names_argument_and_range():
    d = default_dictionary()
    cap = d.command("gpu.SET_POWER_CAP")
    assert cap.validate_args({"cap_w": 450}) == {"cap_w": 450.0}
    with pytest.raises(CommandRejected) as info:
        cap.validate_args({"cap_w": 701})
    assert info.value.status == "VALIDATION_ERROR" and "'cap_w'=701" in info.value.reason and "[200, 700] W" in info.value.reason
    for bad, status in [({"cap_w": "max"}, "FORMAT_ERROR"), ({}, "FORMAT_ERROR"), ({"cap_w": True}, "FORMAT_ERROR"),
                        ({"cap_w": float("nan")}, "VALIDATION_ERROR"), ({"cap_w": 2**70}, "VALIDATION_ERROR"),
                        ({"cap_w": 300, "extra": 1}, "FORMAT_ERROR"), ([1], "FORMAT_ERROR")]:
        with pytest.raises(CommandRejected) as info:
            cap.validate_args(bad)
        assert info.value.status == status, bad
    ask = d.command("inference.ASK")
    assert ask.validate_args({"prompt": "hi"}) == {"prompt": "hi", "max_new_tokens": 64}
    with pytest.raises(CommandRejected, match="INVALID_OPCODE|no command"):
        d.command("gpu.FLY")


def test_text_arguments_parse_to_typed_values():
    d = default_dictionary()
    switch = d.command("eps.SET_SWITCH")
    assert switch.parse_text_args(["switch=gpu", "on=false"]) == {"switch": "gpu", "on": False}
    assert switch.parse_text_args(["gpu", "true"]) == {"switch": "gpu", "on": True}
    assert d.command("inference.ASK").parse_text_args(['prompt="Where are you?"', "max_new_tokens=0x10"]) == {
        "prompt": "Where are you?", "max_new_tokens": 16}
    for tokens, fragment in [(["on=maybe"], "not a bool"), (["speed=3"], "unknown argument 'speed'"),
                             (["gpu", "true", "x"], "too many"), (["switch=gpu", "switch=gpu"], "given twice")]:
        with pytest.raises(ValueError, match=fragment):
            switch.parse_text_args(tokens)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**64), max_value=2**64) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(default_dictionary().commands)), args=json_values)
def test_any_argument_value_is_validated_or_rejected_cleanly(name, args):
    command = default_dictionary().command(name)
    try:
        out = command.validate_args(args)
    except CommandRejected as rejected:
        assert rejected.status in ("FORMAT_ERROR", "VALIDATION_ERROR") and rejected.reason
    else:
        assert set(out) == {a.name for a in command.args}
