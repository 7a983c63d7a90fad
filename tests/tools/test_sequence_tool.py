"""Ground sequence tool: check every file with line numbers, compile the uplink form, the console's
uplink commands, and the shipped example run to completion in SIL through the real dispatcher."""

import json
from importlib import resources
from pathlib import Path

import msgpack
import pytest

from flight.dictionary import default_dictionary
from flight.sequence_format import Sequence, SequenceError, parse_sequence
from tools.sequence_tool import check_files, compile_file, decode_uplink, main, uplink_commands

EXAMPLE = Path(str(resources.files("flight") / "sequences" / "example.seq"))


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_check_prints_every_error_with_file_and_line(tmp_path, capsys):
    bad = write(tmp_path, "bad.seq", "; header\nR00:00:00 modes.NOP\nR00:00:01 modes.NOOP\nR1 gpu.SET_POWER_CAP cap_w=9\n")
    good = write(tmp_path, "good.seq", "R00:00:00 dispatcher.ARM command=eps.SET_SWITCH\n"
                                       "R00:00:05 eps.SET_SWITCH switch=gpu on=false\n")
    assert check_files([bad, good]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{bad}:2: unknown command 'modes.NOP' (did you mean modes.NOOP?)"
    assert out[1].startswith(f"{bad}:4: bad time tag 'R1'")
    assert out[2] == f"{bad}:4: gpu.SET_POWER_CAP: argument 'cap_w'=9.0 out of range: float in [200, 700] W"
    assert out[3] == f"{bad}: 3 errors"
    assert out[4] == f"{good}: OK, 2 commands, HAZARDOUS: eps.SET_SWITCH"
    assert check_files([good, EXAMPLE]) == 0


def test_check_reports_unreadable_files_and_bad_names(tmp_path, capsys):
    missing = tmp_path / "missing.seq"
    badname = write(tmp_path, "pass plan.seq", "R00:00:00 modes.NOOP\n")
    assert check_files([missing, badname]) == 1
    out = capsys.readouterr().out
    assert f"{missing}: cannot read the file" in out
    assert f"{badname}: sequence name 'pass plan' must be 1 to 32 letters" in out


def test_command_line_check_and_compile(tmp_path, capsys):
    assert main(["check", str(EXAMPLE)]) == 0
    assert "example.seq: OK, 7 commands, absolute times 2025-11-02T06:45:00Z" in capsys.readouterr().out
    for suffix in (".json", ".msgpack"):
        out = tmp_path / f"example{suffix}"
        assert main(["compile", str(EXAMPLE), "-o", str(out)]) == 0
        fmt = suffix[1:]
        assert decode_uplink(out.read_bytes(), fmt) == parse_sequence(EXAMPLE.read_text(), name="example")
    bad = write(tmp_path, "bad.seq", "R00:00:00 modes.NOOP\nE+00:00:01 modes.FLY\n")
    assert main(["compile", str(bad), "-o", str(tmp_path / "bad.json")]) == 1
    assert f"{bad}:2: unknown command 'modes.FLY'" in capsys.readouterr().err
    assert not (tmp_path / "bad.json").exists()
    assert main(["compile", str(EXAMPLE), "-o", str(tmp_path / "x.txt")]) == 2


def test_compiled_files_are_the_uplink_form(tmp_path):
    out = tmp_path / "example.json"
    sequence = compile_file(EXAMPLE, out)
    data = json.loads(out.read_text())
    assert data["name"] == "example" and data["format"] == "sunlit-seq/1"
    assert data["steps"][0] == ["R", 0, "modes.NOOP", {}, 14]
    assert Sequence.from_uplink(data) == sequence
    with pytest.raises(SequenceError, match="not valid msgpack"):
        decode_uplink(b"\xc1\xc1", "msgpack")
    with pytest.raises(SequenceError, match="uplink: must be a map"):
        decode_uplink(msgpack.packb([1, 2, 3]), "msgpack")


def test_uplink_commands_load_then_start_and_fit_the_dictionary(tmp_path):
    commands = uplink_commands(EXAMPLE)
    assert commands == [("sequencer.LOAD", {"name": "example", "text": EXAMPLE.read_text()}),
                        ("sequencer.START", {"name": "example"})]
    for name, args in commands:
        default_dictionary().validate_command(name, args)
    with pytest.raises(SequenceError, match="line 1: unknown command"):
        uplink_commands(write(tmp_path, "bad.seq", "R00:00:00 modes.FLY\n"))


def test_long_commented_file_is_sent_without_comments_keeping_line_numbers(tmp_path):
    limit = default_dictionary().command("sequencer.LOAD").arg("text").max_length
    comment = "; " + "x" * 200 + "\n"
    text = comment * (limit // len(comment) + 1) + "R00:00:00 modes.NOOP\nR00:00:01 modes.SET_MODE mode=IDLE ; why\n"
    path = write(tmp_path, "long.seq", text)
    ((_, load), _) = uplink_commands(path)
    assert len(load["text"]) <= limit and ";" not in load["text"]
    sent = parse_sequence(load["text"], name="long")
    assert sent == parse_sequence(text, name="long") and [s.line for s in sent.steps] == [82, 83]
    huge = write(tmp_path, "huge.seq", ("R00:00:01 inference.ASK prompt=" + "a" * 200 + "\n") * 100)
    with pytest.raises(SequenceError, match="even without comments; sequencer.LOAD takes at most 16384"):
        uplink_commands(huge)


def test_example_runs_to_completion_in_sil_through_the_dispatcher(tmp_path):
    """The uplink commands, sent through the dispatcher at the epoch, run the example in SIL."""
    from sim.scenario import load_scenario
    from sim.sil import SilRun

    run = SilRun(load_scenario("starcloud1"), tmp_path / "run", compute="modeled",
                 uplink=uplink_commands(EXAMPLE))
    try:
        watch = run.bus.subscribe(["evt.sequencer", "rsp.dispatch"], name="watch")
        run.bus.settle()
        issued, events = [], ["SEQUENCE_LOADED", "SEQUENCE_STARTED"]  # both in frame zero, before watch
        for _ in range(1, 1000):
            run.step()
            for m in watch.drain():
                if m.topic == "rsp.dispatch" and m.body["origin"] == "sequencer":
                    issued.append((run.t_s, m.body["command"], m.body["status"]))
                elif m.topic == "evt.sequencer":
                    events.append(m.body["name"])
        # LOAD and START are answered in frame zero, so the sequence starts at t = 1 s: R tags count
        # from there, E+00:05:00 is t = 301 s, A06:45:00Z is 15 min after the 06:30 epoch.
        assert [(t, c) for t, c, _ in issued] == [
            (1, "modes.NOOP"), (3, "inference.NOOP"), (13, "modes.SET_MODE"), (18, "inference.ASK"),
            (301, "modes.SET_MODE"), (900, "inference.ASK"), (930, "modes.NOOP")]
        assert {s for _, _, s in issued} == {"OK"}
        assert events == ["SEQUENCE_LOADED", "SEQUENCE_STARTED", "SEQUENCE_COMPLETED"]
        assert run.sequencer.summary()["example"]["state"] == "completed"
    finally:
        run.close()
