"""The test API: drive a running stack from pytest, in the style of F Prime's GDS test API.

    def test_idle(sunlit_api):
        sunlit_api.send_and_assert_command("modes.SET_MODE", {"mode": "IDLE"})
        sunlit_api.await_telemetry("modes.mode", equal_to("IDLE"))
        sunlit_api.assert_event_count("modes.MODE_CHANGED", 1)

``StackApi`` wraps a ground client (tools.ground_client.GroundClient: anything with
``send_command``, ``subscribe`` and ``receive``). It keeps a history of the telemetry and events
received since the last ``clear_histories()``; every await searches that history first, then
receives more until its predicate holds or its timeout passes (no background thread: the
history grows while an await or ``pump`` runs, and the client's socket buffers meanwhile).
Channel and event names are checked against the dictionary at once: a typo is an immediate
``UnknownNameError`` naming close matches, never a timeout.

The pytest plugin (entry point ``pytest11: sunlit = tools.testing``) adds the fixtures
``sunlit_stack`` (session: starts ``sunlit run`` in a subprocess, or connects to
``--sunlit-endpoint``), ``sunlit_session_api`` (session: one connected StackApi) and
``sunlit_api`` (per test: the same StackApi with its histories cleared), and ``sunlit_dictionary``.

This is ground tooling: it reads the wall clock for timeouts, never flight code.
"""

from __future__ import annotations

import difflib
import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flight.bus import Message
from flight.command_status import TERMINAL_STATUSES
from flight.dictionary import Dictionary, EventDef, default_dictionary, load_dictionary

__all__ = [
    "EventRecord",
    "Predicate",
    "StackApi",
    "StackProcess",
    "TelemetrySample",
    "UnknownNameError",
    "all_of",
    "always_true",
    "any_of",
    "close_to",
    "equal_to",
    "greater_than",
    "greater_than_or_equal_to",
    "invert",
    "is_one_of",
    "less_than",
    "less_than_or_equal_to",
    "not_equal_to",
    "within",
]

DEFAULT_TIMEOUT_S = 10.0
_PUMP_SLICE_MS = 100  # longest single receive inside an await (deadlines are checked between)
_DRAIN_BATCHES = 10_000  # bound on the receives of one drain (a flood cannot pin it)


# --------------------------------------------------------------------------------- predicates


class Predicate:
    """A named test on one value; compose with ``&``, ``|``, ``~`` or all_of/any_of/invert.

    A predicate never raises on a value it cannot compare (None, a string where a number was
    expected): it is simply not satisfied.
    """

    def __init__(self, test: Callable[[Any], bool], text: str) -> None:
        self._test = test
        self.text = text

    def __call__(self, value: Any) -> bool:
        try:
            return bool(self._test(value))
        except (TypeError, ValueError, ArithmeticError):
            return False

    def __and__(self, other: Callable[[Any], bool]) -> Predicate:
        return all_of(self, other)

    def __or__(self, other: Callable[[Any], bool]) -> Predicate:
        return any_of(self, other)

    def __invert__(self) -> Predicate:
        return invert(self)

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__


def _is_number(value: Any) -> bool:
    return type(value) is not bool and isinstance(value, (int, float))


def _text(predicate: Callable[[Any], bool]) -> str:
    return predicate.text if isinstance(predicate, Predicate) else getattr(predicate, "__name__", repr(predicate))


def greater_than(limit: float) -> Predicate:
    return Predicate(lambda v: _is_number(v) and v > limit, f"greater_than({limit!r})")


def greater_than_or_equal_to(limit: float) -> Predicate:
    return Predicate(lambda v: _is_number(v) and v >= limit, f"greater_than_or_equal_to({limit!r})")


def less_than(limit: float) -> Predicate:
    return Predicate(lambda v: _is_number(v) and v < limit, f"less_than({limit!r})")


def less_than_or_equal_to(limit: float) -> Predicate:
    return Predicate(lambda v: _is_number(v) and v <= limit, f"less_than_or_equal_to({limit!r})")


def equal_to(expected: Any) -> Predicate:
    """Exact equality (booleans are not numbers here: equal_to(1) does not match True)."""
    return Predicate(lambda v: (type(v) is bool) == (type(expected) is bool) and v == expected,
                     f"equal_to({expected!r})")


def not_equal_to(expected: Any) -> Predicate:
    return invert(equal_to(expected))


def within(low: float, high: float) -> Predicate:
    """low <= value <= high."""
    if not low <= high:
        raise ValueError(f"within({low!r}, {high!r}): low must be <= high")
    return Predicate(lambda v: _is_number(v) and low <= v <= high, f"within({low!r}, {high!r})")


def close_to(expected: float, abs_tol: float) -> Predicate:
    if not abs_tol >= 0:
        raise ValueError(f"close_to: abs_tol must be >= 0, got {abs_tol!r}")
    return Predicate(lambda v: _is_number(v) and abs(v - expected) <= abs_tol, f"close_to({expected!r}, {abs_tol!r})")


def is_one_of(values: Iterable[Any]) -> Predicate:
    options = list(values)
    return Predicate(lambda v: any(equal_to(o)(v) for o in options), f"is_one_of({options!r})")


def always_true() -> Predicate:
    return Predicate(lambda v: True, "always_true()")


def any_of(*predicates: Callable[[Any], bool]) -> Predicate:
    if not predicates:
        raise ValueError("any_of needs at least one predicate")
    return Predicate(lambda v: any(p(v) for p in predicates), f"any_of({', '.join(_text(p) for p in predicates)})")


def all_of(*predicates: Callable[[Any], bool]) -> Predicate:
    if not predicates:
        raise ValueError("all_of needs at least one predicate")
    return Predicate(lambda v: all(p(v) for p in predicates), f"all_of({', '.join(_text(p) for p in predicates)})")


def invert(predicate: Callable[[Any], bool]) -> Predicate:
    return Predicate(lambda v: not predicate(v), f"invert({_text(predicate)})")


# --------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class TelemetrySample:
    channel: str  # component.channel
    value: Any
    t_ns: int     # mission time of the packet (ns since mission start)


@dataclass(frozen=True)
class EventRecord:
    name: str      # component.NAME
    severity: str
    text: str
    t_ns: int
    fields: dict = field(default_factory=dict)  # the whole event body (its extra fields included)

    @property
    def component(self) -> str:
        return self.name.partition(".")[0]


class UnknownNameError(ValueError):
    """A channel or event the dictionary does not declare; the text names close matches."""


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------- the API


class StackApi:
    """Commands, telemetry and events of a running stack, for tests (F Prime IntegrationTestAPI-like).

    Histories hold what arrived since the last ``clear_histories()``; awaits search them from the
    start (``start="clear"``, the default: an event that came while a command was being answered
    is not lost) or only what arrives after the call (``start="now"``).
    """

    def __init__(self, client: Any, dictionary: Dictionary | None = None, *,
                 default_timeout_s: float = DEFAULT_TIMEOUT_S, subscribe: bool = True,
                 clock: Callable[[], float] = time.monotonic, owns_client: bool = False) -> None:
        self.client = client
        self.dictionary = dictionary if dictionary is not None else default_dictionary()
        self.default_timeout_s = default_timeout_s
        self.clock = clock
        self._owns_client = owns_client
        self.telemetry: list[Message] = []   # tlm.* messages since the last clear
        self.event_history: list[EventRecord] = []
        self._newest_t_ns = 0
        self._since_t_ns = 0  # messages older than the last clear are dropped when they straggle in
        self._event_names = {e.name for e in self.dictionary.events.values()}
        if subscribe:
            client.subscribe(("tlm.", "evt."))

    @classmethod
    def connect(cls, endpoint: str, *, keys_dir: str | Path | None = None, client: str = "operator",
                dictionary: Dictionary | None = None, timeout_s: float = 5.0,
                default_timeout_s: float = DEFAULT_TIMEOUT_S) -> StackApi:
        """A StackApi on a new GroundClient (CURVE with ``keys_dir``, insecure without)."""
        from tools.ground_client import GroundClient

        keys = (None, None) if keys_dir is None else (Path(keys_dir) / f"{client}.key_secret",
                                                      Path(keys_dir) / "server.key")
        link = GroundClient(endpoint, *keys, timeout_s=timeout_s)
        try:
            return cls(link, dictionary, default_timeout_s=default_timeout_s, owns_client=True)
        except BaseException:
            link.close()
            raise

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> StackApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- receiving ------------------------------------------------------------------------------

    def pump(self, timeout_ms: int = 0) -> int:
        """Receive what has arrived (waiting up to timeout_ms for the first) into the histories."""
        messages = self.client.receive(int(timeout_ms))
        for message in messages:
            self._newest_t_ns = max(self._newest_t_ns, message.t_ns)
            if message.t_ns < self._since_t_ns:
                continue
            kind, _, component = message.topic.partition(".")
            if kind == "tlm":
                self.telemetry.append(message)
            elif kind == "evt":
                body = message.body
                self.event_history.append(EventRecord(f"{component}.{body.get('name', '?')}",
                                                      str(body.get("severity", "")), str(body.get("text", "")),
                                                      message.t_ns, dict(body)))
        return len(messages)

    def _drain(self) -> None:
        for _ in range(_DRAIN_BATCHES):
            if not self.pump(0):
                return

    def clear_histories(self) -> None:
        """Forget what was received so far (what is buffered too): later checks see only newer data."""
        self._drain()
        self.telemetry.clear()
        self.event_history.clear()
        self._since_t_ns = self._newest_t_ns

    def settle(self, timeout_s: float | None = None) -> None:
        """Wait until telemetry flows (the subscription has joined); AssertionError if none comes."""
        timeout = self._timeout(timeout_s)
        deadline = self.clock() + timeout
        while not self.telemetry:
            if self.clock() >= deadline:
                raise AssertionError(f"no telemetry from the stack within {timeout:g} s")
            self.pump(self._slice_ms(deadline))

    def _timeout(self, timeout_s: float | None) -> float:
        timeout = self.default_timeout_s if timeout_s is None else timeout_s
        if not (timeout >= 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout_s must be a finite number >= 0, got {timeout!r}")
        return timeout

    def _slice_ms(self, deadline: float) -> int:
        return max(1, min(_PUMP_SLICE_MS, math.ceil((deadline - self.clock()) * 1000)))

    # -- names ----------------------------------------------------------------------------------

    def channel(self, name: str) -> tuple[str, str]:
        """(topic, body key) of a channel, or UnknownNameError."""
        if type(name) is not str or self.dictionary.channel(name) is None:
            raise UnknownNameError(f"no telemetry channel {name!r} in the dictionary"
                                   f"{_suggest(str(name), self.dictionary.channels)}")
        component, _, key = name.partition(".")
        return f"tlm.{component}", key

    def _events_named(self, name: str) -> set[str]:
        """Full event names that ``name`` ("component.NAME" or "NAME") stands for."""
        if type(name) is str and name in self.dictionary.events:
            return {name}
        if type(name) is str and name in self._event_names:
            return {n for n, e in self.dictionary.events.items() if e.name == name}
        raise UnknownNameError(f"no event {name!r} in the dictionary{_suggest(str(name), self.dictionary.events)}")

    def event_def(self, name: str) -> EventDef:
        return self.dictionary.events[sorted(self._events_named(name))[0]]

    # -- histories ------------------------------------------------------------------------------

    def telemetry_history(self, channel: str | None = None) -> list[TelemetrySample]:
        """Samples since the last clear, of one channel or all."""
        self._drain()
        if channel is None:
            return [TelemetrySample(f"{m.topic[4:]}.{k}", v, m.t_ns) for m in self.telemetry for k, v in m.body.items()]
        topic, key = self.channel(channel)
        return [TelemetrySample(channel, m.body[key], m.t_ns) for m in self.telemetry
                if m.topic == topic and key in m.body]

    def events(self, name: str | None = None) -> list[EventRecord]:
        """Events since the last clear, of one name or all."""
        self._drain()
        if name is None:
            return list(self.event_history)
        names = self._events_named(name)
        return [e for e in self.event_history if e.name in names]

    # -- commands -------------------------------------------------------------------------------

    def send_command(self, name: str, args: dict[str, Any] | None = None, timeout_s: float | None = None) -> Any:
        """Send as is (no local check: tests may want the stack's own rejection); the CommandResult."""
        return self.client.send_command(name, args or {}, timeout_s)

    def send_and_assert_command(self, name: str, args: dict[str, Any] | None = None, status: str = "OK",
                                timeout_s: float | None = None) -> Any:
        """Send and assert the terminal status (AssertionError with the stack's reason otherwise)."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"status must be one of {', '.join(TERMINAL_STATUSES)}, got {status!r}")
        result = self.send_command(name, args, timeout_s)
        if result.status != status:
            raise AssertionError(f"{name} {_short(args or {})} ended {result.status} (expected {status})"
                                 + (f": {result.reason}" if result.reason else ""))
        return result

    def arm(self, command: str, timeout_s: float | None = None) -> Any:
        """Arm a hazardous command (dispatcher.ARM); assert it was armed."""
        return self.send_and_assert_command("dispatcher.ARM", {"command": command}, timeout_s=timeout_s)

    # -- awaiting -------------------------------------------------------------------------------

    def _await(self, scan: Callable[[int], tuple[Any, int]], describe: Callable[[], str],
               timeout_s: float | None, start: str, history: list) -> Any:
        """Run ``scan(from_index) -> (found or _MISSING, next_index)`` over a history until found."""
        timeout = self._timeout(timeout_s)
        if start not in ("clear", "now"):
            raise ValueError(f"start must be 'clear' or 'now', got {start!r}")
        self._drain()
        index = len(history) if start == "now" else 0
        deadline = self.clock() + timeout
        while True:
            found, index = scan(index)
            if found is not _MISSING:
                return found
            if self.clock() >= deadline:
                raise AssertionError(f"{describe()} within {timeout:g} s")
            self.pump(self._slice_ms(deadline))

    def await_telemetry(self, channel_or_predicate: str | Callable[[Message], bool],
                        predicate: Callable[[Any], bool] | None = None, timeout_s: float | None = None,
                        start: str = "clear") -> Any:
        """The first value of a channel satisfying ``predicate`` (any value without one), or
        with a predicate on whole messages (``lambda m: m.topic == "tlm.gpu" and ...``) the message.

        AssertionError on timeout, naming the channel, the predicate and the last value seen.
        """
        if callable(channel_or_predicate) and not isinstance(channel_or_predicate, str):
            if predicate is not None:
                raise TypeError("await_telemetry(message_predicate) takes no second predicate")
            test = channel_or_predicate
            scanned = [0]

            def scan_messages(index: int) -> tuple[Any, int]:
                for i in range(index, len(self.telemetry)):
                    scanned[0] += 1
                    if test(self.telemetry[i]):
                        return self.telemetry[i], i + 1
                return _MISSING, len(self.telemetry)

            return self._await(scan_messages, lambda: f"no telemetry message satisfying {_text(test)} "
                                                      f"({scanned[0]} messages seen)",
                               timeout_s, start, self.telemetry)
        topic, key = self.channel(channel_or_predicate)
        test = predicate if predicate is not None else always_true()
        seen: list[Any] = []

        def scan(index: int) -> tuple[Any, int]:
            for i in range(index, len(self.telemetry)):
                message = self.telemetry[i]
                if message.topic == topic and key in message.body:
                    value = message.body[key]
                    seen.append(value)
                    if test(value):
                        return value, i + 1
            return _MISSING, len(self.telemetry)

        def describe() -> str:
            last = f", the last {_short(seen[-1])}" if seen else ""
            return f"{channel_or_predicate}: no value satisfying {_text(test)} ({len(seen)} samples seen{last})"

        return self._await(scan, describe, timeout_s, start, self.telemetry)

    def await_telemetry_count(self, channel: str, count: int | Callable[[int], bool],
                              timeout_s: float | None = None, predicate: Callable[[Any], bool] | None = None,
                              start: str = "clear") -> list[Any]:
        """Wait for ``count`` samples of a channel (satisfying ``predicate`` if given); their values.

        ``count`` is a number (at least that many; the first ``count`` are returned) or a predicate
        on the number of samples (all of them are returned once it holds).
        """
        topic, key = self.channel(channel)
        test = predicate if predicate is not None else always_true()
        wanted = _count_predicate(count)
        values: list[Any] = []

        def scan(index: int) -> tuple[Any, int]:
            if isinstance(count, int) and wanted(len(values)):  # count 0
                return list(values), index
            for i in range(index, len(self.telemetry)):
                message = self.telemetry[i]
                if message.topic == topic and key in message.body and test(message.body[key]):
                    values.append(message.body[key])
                    if isinstance(count, int) and wanted(len(values)):
                        return list(values), i + 1
            if not isinstance(count, int) and wanted(len(values)):
                return list(values), len(self.telemetry)
            return _MISSING, len(self.telemetry)

        return self._await(scan, lambda: f"{channel}: {len(values)} samples"
                                         + (f" satisfying {_text(test)}" if predicate is not None else "")
                                         + f", wanted {_text(wanted)}", timeout_s, start, self.telemetry)

    def await_event(self, name: str, timeout_s: float | None = None,
                    predicate: Callable[[EventRecord], bool] | None = None, start: str = "clear") -> EventRecord:
        """The first event ``name`` ("modes.MODE_CHANGED" or "MODE_CHANGED") satisfying ``predicate``."""
        names = self._events_named(name)
        test = predicate if predicate is not None else always_true()

        def scan(index: int) -> tuple[Any, int]:
            for i in range(index, len(self.event_history)):
                event = self.event_history[i]
                if event.name in names and test(event):
                    return event, i + 1
            return _MISSING, len(self.event_history)

        def describe() -> str:
            others = sorted({e.name for e in self.event_history})
            return (f"no event {name}" + (f" satisfying {_text(test)}" if predicate is not None else "")
                    + f" (events seen: {', '.join(others) or 'none'})")

        return self._await(scan, describe, timeout_s, start, self.event_history)

    def assert_event_count(self, name: str, count: int | Callable[[int], bool], timeout_s: float | None = None,
                           predicate: Callable[[EventRecord], bool] | None = None) -> list[EventRecord]:
        """Assert how many events ``name`` arrived since the last clear; the events.

        ``count`` is an exact number or a predicate on the number (``greater_than(0)``). It waits
        up to ``timeout_s`` for the count to be reached (events still in flight), but fails at once
        when an exact count is already exceeded.
        """
        names = self._events_named(name)
        test = predicate if predicate is not None else always_true()
        wanted = _count_predicate(count, exact=True)
        timeout = self._timeout(timeout_s)
        deadline = self.clock() + timeout
        self._drain()
        while True:
            matching = [e for e in self.event_history if e.name in names and test(e)]
            if wanted(len(matching)):
                return matching
            exceeded = isinstance(count, int) and len(matching) > count
            if exceeded or self.clock() >= deadline:
                texts = "; ".join(e.text for e in matching[:5])
                raise AssertionError(f"{name}: {len(matching)} events, wanted {_text(wanted)}"
                                     + ("" if exceeded else f" within {timeout:g} s")
                                     + (f" ({texts})" if texts else ""))
            self.pump(self._slice_ms(deadline))


_MISSING = object()


def _count_predicate(count: int | Callable[[int], bool], exact: bool = False) -> Callable[[int], bool]:
    if isinstance(count, bool) or not (isinstance(count, int) or callable(count)):
        raise TypeError(f"count must be an int or a predicate, got {type(count).__name__}")
    if callable(count):
        return count
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return equal_to(count) if exact else greater_than_or_equal_to(count)


# --------------------------------------------------------------------------------- the stack process


class StackProcess:
    """``sunlit run`` in a subprocess: start, wait for its ready file, stop with SIGTERM.

    The stack binds free ports on 127.0.0.1 (``--port 0``) and makes a fresh key folder in its
    output folder unless ``extra_args`` say otherwise. Its output goes to ``<folder>/stack.log``.
    """

    def __init__(self, folder: Path, *, scenario: str = "starcloud1", speed: str | float = 10,
                 extra_args: Iterable[str] = (), start_timeout_s: float = 60.0) -> None:
        self.folder = Path(folder)
        self.ready_file = self.folder / "ready.json"
        self.log_path = self.folder / "stack.log"
        self.args = [sys.executable, "-m", "tools.cli", "run", "--scenario", str(scenario), "--compute", "modeled",
                     "--speed", str(speed), "--port", "0", "--ready-file", str(self.ready_file),
                     "--out", str(self.folder / "run"), *extra_args]
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}

    def start(self) -> dict[str, Any]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.ready_file.exists():
                try:
                    self.info = json.loads(self.ready_file.read_text())
                    return self.info
                except (json.JSONDecodeError, OSError):
                    pass  # written atomically by the stack; a half file would be a bug there, retry anyway
            if self.process.poll() is not None:
                raise RuntimeError(f"sunlit run exited with {self.process.returncode} before it was ready:\n"
                                   f"{self.log_tail()}")
            if time.monotonic() >= deadline:
                self.stop()
                raise RuntimeError(f"sunlit run not ready within {self.start_timeout_s:g} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM (the stack finishes its tick and writes summary.json), then SIGKILL if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def __enter__(self) -> dict[str, Any]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------- pytest plugin


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sunlit", "Sunlit stack for the test API (fixtures sunlit_stack, sunlit_api)")
    group.addoption("--sunlit-endpoint", default=None, metavar="ENDPOINT",
                    help="command endpoint of a running stack; default: start `sunlit run` for the session")
    group.addoption("--sunlit-keys", default=None, metavar="DIR",
                    help="key folder of that stack (DIR/server.key, DIR/<client>.key_secret); none: insecure")
    group.addoption("--sunlit-client", default="operator", metavar="NAME", help="client name in the key folder")
    group.addoption("--sunlit-scenario", default="starcloud1", help="scenario of the started stack")
    group.addoption("--sunlit-speed", default="10", help="speed-up of the started stack (sim s per wall s, or max)")
    group.addoption("--sunlit-run-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for the started `sunlit run` (repeatable)")
    group.addoption("--sunlit-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                    help="default timeout of commands and awaits")
    group.addoption("--sunlit-start-timeout", type=float, default=60.0, metavar="S",
                    help="how long the started stack may take to be ready")
    group.addoption("--sunlit-dictionary", default=None, metavar="DIR", help="dictionary folder (default: packaged)")


def _option(config: pytest.Config, name: str, default: Any) -> Any:
    # The fixtures also work imported into a test module without the plugin's options registered.
    return config.getoption(name, default)


@pytest.fixture(scope="session")
def sunlit_dictionary(pytestconfig: pytest.Config) -> Dictionary:
    folder = _option(pytestconfig, "--sunlit-dictionary", None)
    return load_dictionary(folder) if folder else default_dictionary()


@pytest.fixture(scope="session")
def sunlit_stack(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The stack under test: its ready-file info (command_endpoint, telemetry_endpoint, keys_dir, pid...)."""
    endpoint = _option(pytestconfig, "--sunlit-endpoint", None)
    if endpoint:
        keys = _option(pytestconfig, "--sunlit-keys", None)
        yield {"command_endpoint": endpoint, "telemetry_endpoint": None, "keys_dir": keys, "pid": None}
        return
    stack = StackProcess(tmp_path_factory.mktemp("sunlit_stack"),
                         scenario=_option(pytestconfig, "--sunlit-scenario", "starcloud1"),
                         speed=_option(pytestconfig, "--sunlit-speed", "10"),
                         extra_args=_option(pytestconfig, "--sunlit-run-arg", []),
                         start_timeout_s=_option(pytestconfig, "--sunlit-start-timeout", 60.0))
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def sunlit_session_api(pytestconfig: pytest.Config, sunlit_stack: dict[str, Any],
                       sunlit_dictionary: Dictionary) -> Iterator[StackApi]:
    """One connection for the session, its subscription settled (telemetry flowing)."""
    timeout_s = _option(pytestconfig, "--sunlit-timeout", DEFAULT_TIMEOUT_S)
    api = StackApi.connect(sunlit_stack["command_endpoint"], keys_dir=sunlit_stack.get("keys_dir"),
                           client=_option(pytestconfig, "--sunlit-client", "operator"),
                           dictionary=sunlit_dictionary, timeout_s=timeout_s, default_timeout_s=timeout_s)
    try:
        remote = getattr(api.client, "dictionary_sha256", "")
        from flight.ground_link import dictionary_sha256

        if remote and remote != dictionary_sha256(sunlit_dictionary):
            import warnings

            warnings.warn(f"the stack's dictionary (sha256 {remote[:12]}) differs from the tests' one", stacklevel=1)
        api.settle()
        yield api
    finally:
        api.close()


@pytest.fixture
def sunlit_api(sunlit_session_api: StackApi) -> StackApi:
    """The session's StackApi with its histories cleared for this test."""
    sunlit_session_api.clear_histories()
    return sunlit_session_api
