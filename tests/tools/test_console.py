"""The operator console: completion, local parsing and rejection, script exit codes, watch, help.

A fake ground client (the same send_command/subscribe/receive API as tools.ground_client) with a
virtual clock stands in for the stack, so nothing here waits on real time.
"""

import io
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flight.bus import Message
from flight.dictionary import default_dictionary
from tools.console import (
    ConsoleSession,
    ConsoleShell,
    complete_line,
    dictionary_sha256,
    format_channel_value,
    format_watch_line,
    run_console,
    split_commands,
)
from tools.ground_client import CommandResult, LinkTimeout

D = default_dictionary()
RED, YELLOW = "\033[1;31m", "\033[33m"


class FakeClient:
    """Answers every command with a scripted status; telemetry scheduled on a virtual clock."""

    def __init__(self, statuses=None, sha=None):
        self.statuses = statuses or {}
        self.sent = []
        self.scheduled = []  # (virtual time s, Message)
        self.now = 0.0
        self.subscribed = None
        self.closed = False
        self.timeout_s = 5.0
        self.dictionary_sha256 = dictionary_sha256(D) if sha is None else sha
        self.role, self.client_name, self.mission_utc = "operator", "operator", "2025-11-02T06:30:00Z"

    def clock(self):
        return self.now

    def send_command(self, command, args=None, timeout_s=None):
        self.sent.append((command, args))
        status, reason = self.statuses.get(command, ("OK", ""))
        if status == "TIMEOUT":
            raise LinkTimeout(f"no response to {command} within 5 s")
        return CommandResult(len(self.sent), command, status, reason)

    def subscribe(self, prefixes=("tlm.", "evt.")):
        self.subscribed = tuple(prefixes)

    def at(self, t_s, topic, body, t_ns=None):
        t_ns = int(t_s * 1e9) if t_ns is None else t_ns
        self.scheduled.append((t_s, Message(topic, len(self.scheduled), t_ns, topic[4:], body)))

    def receive(self, timeout_ms=0):
        due = [m for t, m in self.scheduled if t <= self.now]
        if not due and timeout_ms > 0:
            upcoming = [t for t, _ in self.scheduled if t > self.now]
            step = timeout_ms / 1000
            self.now = min(upcoming) if upcoming and min(upcoming) - self.now <= step else self.now + step
            due = [m for t, m in self.scheduled if t <= self.now]
        self.scheduled = [(t, m) for t, m in self.scheduled if t > self.now]
        return due

    def close(self):
        self.closed = True


def session(client=None, **kwargs):
    client = client or FakeClient()
    out, err = io.StringIO(), io.StringIO()
    return ConsoleSession(client, D, out=out, err=err, clock=client.clock, **kwargs), client, out, err


# --------------------------------------------------------------------------------- completion


def test_first_word_completes_console_words_and_command_names():
    assert complete_line(D, "eps.SE") == ["eps.SET_SWITCH "]
    assert complete_line(D, "wa") == ["wait ", "watch "]
    everything = complete_line(D, "")
    assert {c.strip() for c in everything} == set(D.commands) | {"help", "channels", "events", "watch", "arm", "ask",
                                                                  "wait", "quit", "exit"}


@given(st.sampled_from(sorted(D.commands)), st.integers(min_value=0, max_value=30))
def test_any_prefix_of_a_command_name_completes_to_it(name, cut):
    assert name + " " in complete_line(D, name[:cut])


def test_arguments_complete_by_name_then_values():
    # Nothing given yet: the names, and the first argument's values (it may be given positionally).
    assert complete_line(D, "eps.SET_SWITCH ") == ["switch=", "on=", "gpu "]
    assert complete_line(D, "modes.SET_MODE ") == ["mode=", "SAFE ", "IDLE ", "LOW_POWER ", "NOMINAL "]
    # A keyword argument given: only the names left.
    assert complete_line(D, "eps.SET_SWITCH switch=gpu ") == ["on="]
    assert complete_line(D, "eps.SET_SWITCH switch=gpu on=") == ["on=true ", "on=false "]
    assert complete_line(D, "eps.SET_SWITCH switch=gpu on=f") == ["on=false "]
    assert complete_line(D, "modes.SET_MODE mode=N") == ["mode=NOMINAL "]
    # Positional values so far fill the declared order: the next one is 'on'.
    assert complete_line(D, "eps.SET_SWITCH gpu ") == ["on=", "true ", "false "]
    # Numbers have no values to offer; an unknown argument none.
    assert complete_line(D, "gpu.SET_POWER_CAP cap_w=") == []
    assert complete_line(D, "gpu.SET_POWER_CAP watts=") == []


def test_console_words_complete_their_arguments():
    assert complete_line(D, "arm ") == [n + " " for n in D.hazardous_commands()]
    assert complete_line(D, "help gpu.SET") == ["gpu.SET_POWER_CAP "]
    assert complete_line(D, "watch eps.battery_s") == ["eps.battery_soc "]
    assert set(complete_line(D, "watch gpu.")) == {n + " " for n in D.channels if n.startswith("gpu.")}
    assert complete_line(D, "events --severity WARN") == ["WARNING_HI ", "WARNING_LO "]
    assert complete_line(D, "channels eps") == ["eps."]
    assert complete_line(D, "channels ep") == ["ephemeris.", "eps."]
    # After ';' a new command starts.
    assert complete_line(D, "modes.NOOP; eps.SE") == ["eps.SET_SWITCH "]


def test_split_commands_respects_quotes():
    assert split_commands("a; b 'x;y' ;; c") == ["a", "b 'x;y'", "c"]
    assert split_commands('inference.ASK prompt="a;b"') == ['inference.ASK prompt="a;b"']
    assert split_commands("modes.NOOP  # then; not this") == ["modes.NOOP"]
    assert split_commands('inference.ASK prompt="#1; go"') == ['inference.ASK prompt="#1; go"']


# --------------------------------------------------------------------------------- commands


def test_keyword_and_positional_arguments_are_typed_and_sent():
    s, client, out, _ = session()
    assert s.execute("eps.SET_SWITCH switch=gpu on=false")
    assert s.execute("eps.SET_SWITCH gpu true")
    assert s.execute("gpu.SET_POWER_CAP 300")
    assert s.execute('inference.ASK prompt="Where are you?" max_new_tokens=16')
    assert client.sent == [
        ("eps.SET_SWITCH", {"switch": "gpu", "on": False}),
        ("eps.SET_SWITCH", {"switch": "gpu", "on": True}),
        ("gpu.SET_POWER_CAP", {"cap_w": 300.0}),
        ("inference.ASK", {"prompt": "Where are you?", "max_new_tokens": 16}),
    ]
    assert out.getvalue().count("OK ") == 4


def test_out_of_range_argument_is_rejected_locally_naming_argument_and_range():
    s, client, _, err = session()
    assert not s.execute("gpu.SET_POWER_CAP cap_w=900")
    assert client.sent == []
    text = err.getvalue()
    # The range comes from gpu.toml: 200..700 W.
    assert "VALIDATION_ERROR" in text and "'cap_w'" in text and "[200, 700] W" in text and "not sent" in text
    assert len(s.failures) == 1


@pytest.mark.parametrize("line, needle", [
    ("gpu.SET_POWER_CAP cap_w=abc", "'cap_w'"),          # not a number
    ("gpu.SET_POWER_CAP watts=300", "'watts'"),          # unknown argument
    ("gpu.SET_POWER_CAP", "'cap_w'"),                    # missing argument
    ("modes.SET_MODE mode=FAST", "SAFE, IDLE, LOW_POWER, NOMINAL"),
    ("eps.SET_SWITCH gpu maybe", "'on'"),
    ("gpu.SET_POWR_CAP cap_w=300", "gpu.SET_POWER_CAP"),  # unknown command, with a suggestion
    ("inference.ASK prompt=\"unclosed", "quotation"),
])
def test_bad_lines_fail_locally_and_are_not_sent(line, needle):
    s, client, _, err = session()
    assert not s.execute(line)
    assert client.sent == []
    assert needle in err.getvalue()


def test_stack_rejection_and_link_timeout_are_failures_with_their_reason():
    client = FakeClient({"eps.SET_SWITCH": ("EXECUTION_ERROR", "eps.SET_SWITCH is hazardous: arm first"),
                         "modes.NOOP": ("TIMEOUT", "")})
    s, _, _, err = session(client)
    assert not s.execute("eps.SET_SWITCH switch=gpu on=false")
    assert not s.execute("modes.NOOP")
    text = err.getvalue()
    assert "EXECUTION_ERROR eps.SET_SWITCH: eps.SET_SWITCH is hazardous: arm first" in text
    assert "LinkTimeout" in text
    assert [f.text.split()[0] for f in s.failures] == ["EXECUTION_ERROR", "LINK_ERROR"]


def test_a_broken_link_while_watching_is_a_failure_not_a_crash():
    class Broken(FakeClient):
        def receive(self, timeout_ms=0):
            raise RuntimeError("the ground client is closed")

    s, _, _, err = session(Broken())
    assert not s.execute("watch eps.battery_soc --count 1")
    assert "the ground client is closed" in err.getvalue()


def test_arm_sends_dispatcher_arm_for_hazardous_commands_only():
    s, client, _, err = session()
    assert s.execute("arm eps.SET_SWITCH")
    assert client.sent == [("dispatcher.ARM", {"command": "eps.SET_SWITCH"})]
    assert not s.execute("arm modes.SET_MODE")
    assert "not a hazardous command" in err.getvalue()
    assert len(client.sent) == 1


# --------------------------------------------------------------------------------- help


def test_help_prints_the_dictionary_help_text():
    s, _, out, _ = session()
    assert s.execute("help eps.SET_SWITCH")
    assert D.commands["eps.SET_SWITCH"].help_text() in out.getvalue()
    assert "HAZARDOUS" in out.getvalue()


def test_help_lists_words_and_commands_by_component():
    s, _, out, _ = session()
    assert s.execute("help")
    text = out.getvalue()
    assert "watch CHANNEL" in text and "SET_SWITCH*" in text
    for name in D.commands:
        component, opcode = name.split(".")
        line = next(li for li in text.splitlines() if li.strip().startswith(component + ":"))
        assert opcode in line


def test_help_of_a_channel_component_and_unknown_name():
    s, _, out, err = session()
    assert s.execute("help eps.battery_soc")
    assert "red <= 0.3" in out.getvalue() and "yellow <= 0.35" in out.getvalue()
    assert s.execute("help modes")
    assert "modes.SET_MODE" in out.getvalue()
    assert not s.execute("help eps.batery_soc")
    assert "eps.battery_soc" in err.getvalue()


def test_channels_lists_units_and_limits():
    s, _, out, _ = session()
    assert s.execute("channels gpu")
    text = out.getvalue()
    names = [li.split()[0] for li in text.splitlines() if li.startswith("gpu.")]
    assert names == sorted(n for n in D.channels if n.startswith("gpu."))
    temp = next(li for li in text.splitlines() if li.startswith("gpu.temp_c"))
    assert "[degC]" in temp and "yellow >= 83" in temp and "red >= 87" in temp and "optional" in temp
    assert s.execute("channels scheduler")
    assert "scheduler.*_cycles" in out.getvalue()


# --------------------------------------------------------------------------------- watch


@pytest.mark.parametrize("value, state", [(80.0, None), (83.0, "YELLOW_HIGH"), (85.0, "YELLOW_HIGH"),
                                          (87.0, "RED_HIGH"), (95.5, "RED_HIGH")])
def test_watch_value_shows_units_and_limit_state(value, state):
    temp = D.channels["gpu.temp_c"]  # yellow_high 83, red_high 87 (inclusive), degC
    plain = format_channel_value(temp, value)
    assert plain.startswith(f"{value:.3f} degC")
    assert plain.endswith(state) if state else plain == f"{value:.3f} degC"
    coloured = format_channel_value(temp, value, color=True)
    if state is None:
        assert "\033[" not in coloured
    else:
        assert coloured.startswith(RED if state.startswith("RED") else YELLOW) and coloured.endswith("\033[0m")


def test_watch_value_dimensionless_none_and_enum():
    soc = D.channels["eps.battery_soc"]  # units "1": no unit shown; red_low 0.30, yellow_low 0.35
    assert format_channel_value(soc, 0.8125) == "0.812" or format_channel_value(soc, 0.8125) == "0.813"
    assert format_channel_value(soc, 0.25) == "0.250 RED_LOW"
    assert format_channel_value(soc, 0.35) == "0.350 YELLOW_LOW"
    assert format_channel_value(D.channels["gpu.temp_c"], None) == "none"
    assert format_channel_value(D.channels["modes.mode"], "IDLE") == "IDLE"
    assert format_channel_value(D.channels["eps.switch_gpu"], True) == "true"


def test_watch_line_has_mission_time_and_every_channel():
    channels = [D.channels["eps.battery_soc"], D.channels["gpu.temp_c"]]
    line = format_watch_line(channels, {"eps.battery_soc": (0.5, 3_723 * 10**9)})
    assert line == "T+01:02:03  eps.battery_soc=0.500  gpu.temp_c=-"


def test_watch_in_a_script_counts_samples():
    client = FakeClient()
    for i, soc in enumerate((0.9, 0.34, 0.2)):
        client.at(1.0 + i, "tlm.eps", {"battery_soc": soc, "solar_power_w": 10.0})
        client.at(1.5 + i, "tlm.gpu", {"temp_c": 50.0})  # another topic: not a sample of the watch
    s, _, out, _ = session(client)
    assert s.execute("watch eps.battery_soc --count 3")
    lines = out.getvalue().splitlines()
    assert lines == ["T+00:00:01  eps.battery_soc=0.900",
                     "T+00:00:02  eps.battery_soc=0.340 YELLOW_LOW",
                     "T+00:00:03  eps.battery_soc=0.200 RED_LOW"]


def test_watch_makes_one_line_per_tick_across_topics():
    client = FakeClient()
    for tick in (1, 2, 3):
        client.at(tick, "tlm.eps", {"battery_soc": 0.5 + tick / 10})
        client.at(tick, "tlm.gpu", {"temp_c": 80.0 + tick})
    s, _, out, _ = session(client)
    assert s.execute("watch eps.battery_soc gpu.temp_c --count 2")
    assert out.getvalue().splitlines() == [
        "T+00:00:01  eps.battery_soc=0.600  gpu.temp_c=81.000 degC",
        "T+00:00:02  eps.battery_soc=0.700  gpu.temp_c=82.000 degC",
    ]


def test_watch_fails_without_telemetry_or_bound_or_known_channel():
    s, _, _, err = session()
    assert not s.execute("watch eps.battery_soc --for 2")  # nothing arrives in 2 (virtual) s
    assert "no sample of eps.battery_soc" in err.getvalue()
    assert not s.execute("watch eps.battery_soc")  # a script would wait forever
    assert "--for" in err.getvalue()
    assert not s.execute("watch eps.batery_soc --count 1")
    assert "eps.battery_soc" in err.getvalue().splitlines()[-1]


# --------------------------------------------------------------------------------- events


def event_client():
    client = FakeClient()
    client.at(1, "evt.modes", {"severity": "ACTIVITY_HI", "name": "MODE_CHANGED", "text": "NOMINAL -> IDLE"})
    client.at(2, "evt.dispatcher", {"severity": "WARNING_LO", "name": "COMMAND_REJECTED", "text": "bad cap"})
    client.at(3, "evt.power", {"severity": "WARNING_HI", "name": "COMMAND_FAILED", "text": "eps said no"})
    return client


def test_events_filters_by_severity_and_name():
    client = event_client()
    client.now = 5.0
    s, _, out, _ = session(client)
    assert s.execute("events --severity WARNING_LO")
    text = out.getvalue()
    assert "dispatcher.COMMAND_REJECTED: bad cap" in text and "power.COMMAND_FAILED" in text
    assert "MODE_CHANGED" not in text
    assert s.execute("events MODE_CHANGED")
    assert "T+00:00:01  ACTIVITY_HI modes.MODE_CHANGED: NOMINAL -> IDLE" in out.getvalue()
    assert not s.execute("events MODE_CHANGD")


def test_events_follow_waits_for_the_next_matching_event():
    s, _, out, err = session(event_client())
    assert s.execute("events --follow --count 1 power")
    assert out.getvalue().strip().endswith("power.COMMAND_FAILED: eps said no")
    assert not s.execute("events --follow --count 1 MODE_CHANGED")  # no more come
    assert "0 of 1 events" in err.getvalue()
    assert s.execute("events --follow --for 1")  # a quiet stream is not a failure
    assert s.execute("events --list modes.")
    assert "modes.SAFE_MODE_ENTERED" in out.getvalue()


def test_wait_pumps_events_for_later_display():
    s, _, out, _ = session(event_client())
    assert s.execute("wait 4")
    assert s.execute("events")
    assert out.getvalue().count("\n") == 3
    assert not s.execute("wait soon")


# --------------------------------------------------------------------------------- run_console


def run(argv, client=None, stdin=""):
    client = client or FakeClient()
    out, err = io.StringIO(), io.StringIO()

    def factory(endpoint, client_key, server_key, timeout_s):
        factory.args = (endpoint, client_key, server_key, timeout_s)
        return client

    code = run_console(argv, client_factory=factory, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, client, out.getvalue(), err.getvalue(), factory


def test_commands_all_ok_exit_zero():
    code, client, out, err, _ = run(["tcp://x:1", "--insecure", "-c", "modes.NOOP",
                                     "-c", "eps.NOOP; modes.SET_MODE IDLE"])
    assert code == 0, err
    assert [c for c, _ in client.sent] == ["modes.NOOP", "eps.NOOP", "modes.SET_MODE"]
    assert client.closed


def test_script_with_one_failure_exits_one_and_lists_it(tmp_path):
    script = tmp_path / "pass.txt"
    script.write_text("# a pass\nmodes.SET_MODE IDLE   # comment\n\ngpu.SET_POWER_CAP cap_w=900\nmodes.NOOP\n")
    code, client, out, err, _ = run(["tcp://x:1", "--insecure", str(script)])
    assert code == 1
    assert [c for c, _ in client.sent] == ["modes.SET_MODE", "modes.NOOP"]  # the bad line was not sent
    assert f"{script}:4" in err and "1 of 3 commands" in err


def test_stop_on_failure_and_quit_end_the_script(tmp_path):
    script = tmp_path / "s.txt"
    script.write_text("modes.NOOP\nquit\neps.NOOP\n")
    code, client, _, _, _ = run(["tcp://x:1", "--insecure", str(script)])
    assert code == 0 and [c for c, _ in client.sent] == ["modes.NOOP"]
    failing = FakeClient({"modes.NOOP": ("EXECUTION_ERROR", "no")})
    code, client, _, _, _ = run(["tcp://x:1", "--insecure", "--stop-on-failure", "-c", "modes.NOOP", "-c", "eps.NOOP"],
                                failing)
    assert code == 1 and [c for c, _ in client.sent] == ["modes.NOOP"]


def test_stdin_that_is_not_a_terminal_is_a_script():
    code, client, _, _, _ = run(["tcp://x:1", "--insecure"], stdin="modes.NOOP\neps.NOOP\n")
    assert code == 0 and len(client.sent) == 2


def test_keys_folder_gives_the_client_and_server_key_paths(tmp_path):
    (tmp_path / "server.key").write_text("x")
    (tmp_path / "alice.key_secret").write_text("x")
    code, _, _, err, factory = run(["tcp://x:1", "--keys", str(tmp_path), "--client", "alice", "-c", "modes.NOOP",
                                    "--timeout", "2.5"])
    assert code == 0, err
    assert factory.args == ("tcp://x:1", tmp_path / "alice.key_secret", tmp_path / "server.key", 2.5)


@pytest.mark.parametrize("extra", [
    [],                                            # neither keys nor --insecure
    ["--keys", "/nonexistent-keys"],               # missing key files
    ["--insecure", "--keys", "/tmp"],              # contradictory
    ["--client-key", "/tmp/a"],                    # half of a pair
    ["--insecure", "/nonexistent/script.txt"],     # unreadable script
    ["--insecure", "--timeout", "0"],
])
def test_usage_errors_exit_two(extra):
    code, client, _, err, _ = run(["tcp://x:1", "-c", "modes.NOOP", *extra])
    assert code == 2
    assert err.startswith("sunlit console: ")
    assert client.sent == []


def test_unreachable_endpoint_exits_two_with_a_clear_message():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out, err = io.StringIO(), io.StringIO()
    code = run_console([f"tcp://127.0.0.1:{port}", "--insecure", "--timeout", "0.3", "-c", "modes.NOOP"],
                       stdin=io.StringIO(""), stdout=out, stderr=err)
    assert code == 2
    assert "cannot connect to" in err.getvalue() and "Traceback" not in err.getvalue()
    code = run_console(["not-an-endpoint", "--insecure", "-c", "modes.NOOP"], stdin=io.StringIO(""),
                       stdout=out, stderr=err)
    assert code == 2


def test_dictionary_mismatch_is_warned():
    code, _, _, err, _ = run(["tcp://x:1", "--insecure", "-c", "modes.NOOP"], FakeClient(sha="0" * 64))
    assert code == 0
    assert "differs" in err


def test_dictionary_sha256_is_the_canonical_json_hash():
    import hashlib
    import json

    text = json.dumps(D.to_json(), sort_keys=True, separators=(",", ":"))
    assert dictionary_sha256(D) == hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------------- interactive


def test_shell_runs_lines_and_never_repeats_an_empty_one():
    s, client, out, _ = session(interactive=True)
    shell = ConsoleShell(s, history_path=None, stdin=io.StringIO("modes.NOOP\n\n\neps.NOOP\nquit\nmodes.NOOP\n"),
                         stdout=out)
    shell.run(intro="")
    assert [c for c, _ in client.sent] == ["modes.NOOP", "eps.NOOP"]


def test_ask_prints_the_assistants_answer():
    class AssistantClient(FakeClient):
        def send_command(self, command, args=None, timeout_s=None):
            result = super().send_command(command, args, timeout_s)
            if command == "assistant.ASK":
                self.at(self.now + 1.0, "evt.assistant", {
                    "severity": "ACTIVITY_HI", "name": "ASSISTANT_ANSWER", "text": "",
                    "question": args["question"], "answer": "I'm above Africa.", "source": "template"})
            return result

    client = AssistantClient()
    client.at(0.0, "tlm.modes", {"mode": "NOMINAL"})  # telemetry flows: the subscription has joined
    console, client, out, err = session(client)
    assert console.execute("ask Where are you?")
    assert "I'm above Africa.   (template)" in out.getvalue()
    assert client.sent[-1] == ("assistant.ASK", {"question": "Where are you?"})
