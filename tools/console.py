"""`sunlit console`: the operator's prompt to a running stack, and its script mode.

    sunlit console tcp://127.0.0.1:5555 --keys keys/                       interactive
    sunlit console tcp://127.0.0.1:5555 --keys keys/ -c 'modes.SET_MODE IDLE'   one command
    sunlit console tcp://127.0.0.1:5555 --keys keys/ pass.txt              a script file

A line is a dictionary command, ``eps.SET_SWITCH switch=gpu on=false`` (or its values in declared
order, ``eps.SET_SWITCH gpu false``), or a console word: help, channels, events, watch, arm, wait,
quit. ``;`` separates commands on one line, ``#`` starts a comment. Every command is parsed and
validated against the dictionary before it is sent: a bad argument is rejected here, naming the
argument and its valid range, and never goes up. What goes up ends in exactly one terminal status,
printed with its reason.

Exit status (for automation): 0 when every command ended OK, 1 when any did not (each failure
is listed at the end), 2 for usage and connection errors. The interactive prompt exits 0.

This is a ground tool: it reads the wall clock (pacing ``wait`` and ``watch``), never flight code.
"""

from __future__ import annotations

import argparse
import cmd
import difflib
import json
import math
import os
import shlex
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from flight.dictionary import SEVERITIES, ArgDef, ChannelDef, CommandDef, Dictionary, load_dictionary
from flight.ground_link import dictionary_sha256  # the hash the stack announces in its welcome

__all__ = [
    "ConsoleSession",
    "ConsoleShell",
    "add_console_arguments",
    "build_parser",
    "complete_line",
    "dictionary_sha256",
    "format_channel_value",
    "format_event",
    "format_watch_line",
    "run_console",
    "split_commands",
]

NS_PER_S = 1_000_000_000
DEFAULT_HISTORY = Path("~/.sunlit_history")
HISTORY_LENGTH = 2000
EVENTS_KEPT = 1000
PUMP_SLICE_S = 0.2  # longest wait between checks for Ctrl-C, deadlines and new telemetry

BUILTINS = {
    "help": ("help [NAME]", "this list; or the help of a command, component, channel, event or console word"),
    "channels": ("channels [PREFIX]", "telemetry channels with type, units and limits (e.g. channels eps)"),
    "events": ("events [NAME...] [--severity S] [--follow [--for S] [--count N]] | events --list [PREFIX]",
               "events received since connecting (at or above severity S; NAME: component, NAME or "
               "component.NAME); --follow streams new ones (until Ctrl-C, --for seconds or --count events); "
               "--list shows the declared events"),
    "watch": ("watch CHANNEL... [--for S] [--count N]",
              "live values with units and limit state, until Ctrl-C (in scripts: --for seconds or --count "
              "samples; fails if no sample arrives)"),
    "arm": ("arm COMMAND", "arm a hazardous command (sends dispatcher.ARM command=COMMAND); send it next"),
    "ask": ("ask QUESTION", "ask the onboard assistant (assistant.ASK) and print its answer, e.g. ask Where are you?"),
    "wait": ("wait SECONDS", "pause (scripts), still receiving telemetry and events"),
    "quit": ("quit", "leave the console (also exit, Ctrl-D)"),
    "exit": ("exit", "leave the console"),
}

_LIMIT_COLORS = {"red_low": "\033[1;31m", "red_high": "\033[1;31m", "yellow_low": "\033[33m", "yellow_high": "\033[33m"}
_SEVERITY_COLORS = {"FATAL": "\033[1;31m", "WARNING_HI": "\033[31m", "WARNING_LO": "\033[33m", "COMMAND": "\033[36m"}
_RESET = "\033[0m"


class UsageError(ValueError):
    """A console line that cannot be run as typed; the text says why."""


class _Quit(Exception):
    pass


class _LineParser(argparse.ArgumentParser):
    """argparse for console words: errors are raised, never sys.exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (usage: {BUILTINS[self.prog][0]})")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        raise UsageError(message or f"{self.prog}: bad arguments")


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(text)
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


# --------------------------------------------------------------------------------- formatting


def _ansi(text: str, code: str | None, color: bool) -> str:
    return f"{code}{text}{_RESET}" if color and code else text


def format_number(value: float) -> str:
    """A telemetry number as a person reads it: 3 decimals, or 4 significant digits when tiny/huge."""
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude != 0 and (magnitude >= 1e6 or magnitude < 1e-3):
        return f"{value:.4g}"
    return f"{value:.3f}"


def format_plain_value(value: Any) -> str:
    if value is None:
        return "none"
    if type(value) is bool:
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return format_number(value)
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, default=str, separators=(",", ":"))
        return text if len(text) <= 80 else text[:77] + "..."
    return str(value)


def format_channel_value(channel: ChannelDef, value: Any, color: bool = False) -> str:
    """``85.200 degC YELLOW_HIGH``: value, units (none for "1") and the limit state when not nominal."""
    text = format_plain_value(value)
    if channel.units and channel.units != "1" and value is not None:
        text += f" {channel.units}"
    state = channel.limit_state(value)
    if state == "nominal":
        return text
    return _ansi(f"{text} {state.upper()}", _LIMIT_COLORS.get(state), color)


def format_met(t_ns: int) -> str:
    """Mission elapsed time, ``T+HH:MM:SS`` (hours run past 24)."""
    seconds = max(0, int(t_ns) // NS_PER_S)
    return f"T+{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_watch_line(channels: list[ChannelDef], latest: dict[str, tuple[Any, int]], color: bool = False) -> str:
    """One line of a watch: the newest time, then each channel's latest value ("-" before the first)."""
    times = [latest[c.full_name][1] for c in channels if c.full_name in latest]
    parts = [format_met(max(times)) if times else "T+--:--:--"]
    for channel in channels:
        if channel.full_name in latest:
            parts.append(f"{channel.full_name}={format_channel_value(channel, latest[channel.full_name][0], color)}")
        else:
            parts.append(f"{channel.full_name}=-")
    return "  ".join(parts)


def format_event(event: EventRecord, color: bool = False) -> str:
    severity = _ansi(f"{event.severity:<11}", _SEVERITY_COLORS.get(event.severity), color)
    return f"{format_met(event.t_ns)}  {severity} {event.name}: {event.text}"


def limits_text(channel: ChannelDef) -> str:
    """The limits as ``limit_state`` applies them (inclusive)."""
    parts = []
    for key, op in (("red_low", "<="), ("yellow_low", "<="), ("yellow_high", ">="), ("red_high", ">=")):
        limit = getattr(channel, key)
        if limit is not None:
            parts.append(f"{key.split('_')[0]} {op} {limit:g}")
    return ", ".join(parts)


def channel_line(channel: ChannelDef) -> str:
    kind = channel.type + (f" ({'|'.join(channel.values)})" if channel.values else "")
    units = f" [{channel.units}]" if channel.units else ""
    limits = limits_text(channel)
    limits = f"  limits: {limits}" if limits else ""
    optional = " (optional)" if channel.optional else ""
    return f"{channel.full_name:<40} {kind}{units}{optional}{limits}\n    {channel.description}"


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


# --------------------------------------------------------------------------------- line handling


def split_commands(line: str) -> list[str]:
    """Split a line on ``;`` outside quotes (``a; b 'x;y'`` -> ["a", "b 'x;y'"]); empty parts and
    ``#`` comments dropped."""
    parts, current, quote = [], [], None
    for ch in line:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            break
        elif ch == ";":
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def tokenize(line: str) -> list[str]:
    """Shell-like words with ``#`` comments; UsageError on an unclosed quote."""
    try:
        return shlex.split(line, comments=True)
    except ValueError as exc:
        raise UsageError(f"cannot parse {line!r}: {exc}") from None


def _arg_values(arg: ArgDef) -> list[str]:
    if arg.type == "enum":
        return list(arg.values)
    if arg.type == "bool":
        return ["true", "false"]
    return []


def complete_line(dictionary: Dictionary, line: str) -> list[str]:
    """Candidates for the word being typed at the end of ``line`` (readline replaces that word).

    A complete word ends in a space (command names, enum values); ``name=`` does not, so the value
    follows at once. First word: console words and command names; then, for a command, the names
    of the arguments not given yet and the values of the next positional argument; after ``name=``,
    that argument's enum values or true/false.
    """
    segment = line.rsplit(";", 1)[-1]
    words = segment.split()
    if segment and not segment[-1].isspace() and words:
        current = words.pop()
    else:
        current = ""
    if not words:
        names = sorted(BUILTINS) + sorted(dictionary.commands)
        return [n + " " for n in names if n.startswith(current)]
    head = words[0]
    if head in dictionary.commands:
        return _complete_args(dictionary.commands[head], words[1:], current)
    if head == "help":
        names = sorted(BUILTINS) + sorted(dictionary.commands) + sorted(dictionary.components)
        return [n + " " for n in names if n.startswith(current)] if len(words) == 1 else []
    if head == "watch":
        names = sorted(dictionary.channels) + ["--for", "--count"]
        return [n + " " for n in names if n.startswith(current) and n not in words]
    if head == "channels":
        if len(words) > 1:
            return []
        names = [c + "." for c in sorted(dictionary.components)]
        return [n for n in names if n.startswith(current)] + \
            [n + " " for n in sorted(dictionary.channels) if n.startswith(current) and "." in current]
    if head == "events":
        if words[-1] == "--severity":
            return [s + " " for s in SEVERITIES if s.startswith(current)]
        names = ["--severity", "--follow", "--list", "--for", "--count"] + sorted(dictionary.events)
        return [n + " " for n in names if n.startswith(current) and n not in words]
    if head == "arm" and len(words) == 1:
        return [n + " " for n in dictionary.hazardous_commands() if n.startswith(current)]
    return []


def _complete_args(command: CommandDef, words: list[str], current: str) -> list[str]:
    if "=" in current:
        key, _, partial = current.partition("=")
        arg = command.arg(key)
        return [] if arg is None else [f"{key}={v} " for v in _arg_values(arg) if v.startswith(partial)]
    keyword = {w.partition("=")[0] for w in words if "=" in w}
    positional = sum(1 for w in words if "=" not in w)
    given = keyword | {a.name for a in command.args[:positional]}
    out = [f"{a.name}=" for a in command.args if a.name not in given and a.name.startswith(current)]
    if not keyword and positional < len(command.args):
        out += [v + " " for v in _arg_values(command.args[positional]) if v.startswith(current)]
    return out


# --------------------------------------------------------------------------------- the session


@dataclass(frozen=True)
class EventRecord:
    """One event as the console shows it: ``name`` is ``component.NAME``."""

    name: str
    severity: str
    text: str
    t_ns: int
    fields: dict


@dataclass(frozen=True)
class Failure:
    where: str
    line: str
    text: str


class ConsoleSession:
    """Runs console lines against a ground client; counts what did not end OK.

    ``client`` needs ``send_command(command, args, timeout_s)``, ``subscribe(prefixes)`` and
    ``receive(timeout_ms)`` (tools.ground_client.GroundClient, or a fake in tests).
    """

    def __init__(self, client: Any, dictionary: Dictionary, *, out: TextIO | None = None,
                 err: TextIO | None = None, color: bool = False, interactive: bool = False,
                 timeout_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.dictionary = dictionary
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.color = color
        self.interactive = interactive
        self.timeout_s = timeout_s
        self.clock = clock
        self.failures: list[Failure] = []
        self.commands_run = 0
        self.latest: dict[str, tuple[Any, int]] = {}
        self.events: deque[EventRecord] = deque(maxlen=EVENTS_KEPT)
        self.events_received = 0
        self._subscribed = False

    # -- helpers --------------------------------------------------------------------------------

    def _print(self, text: str = "", end: str = "\n") -> None:
        print(text, end=end, file=self.out, flush=True)

    def _link_timeout_s(self) -> float:
        return self.timeout_s if self.timeout_s is not None else float(getattr(self.client, "timeout_s", 5.0))

    def subscribe(self) -> None:
        """Open the telemetry and event subscription (once); later pumps keep latest values and events."""
        if not self._subscribed:
            self.client.subscribe(("tlm.", "evt."))
            self._subscribed = True

    def pump(self, timeout_ms: int = 0) -> list:
        """Receive what has arrived (waiting up to timeout_ms for the first); returns the messages."""
        self.subscribe()
        messages = self.client.receive(int(timeout_ms))
        for message in messages:
            kind, _, component = message.topic.partition(".")
            if kind == "tlm":
                for key, value in message.body.items():
                    self.latest[f"{component}.{key}"] = (value, message.t_ns)
            elif kind == "evt":
                body = message.body
                self.events.append(EventRecord(f"{component}.{body.get('name', '?')}", str(body.get("severity", "?")),
                                               str(body.get("text", "")), message.t_ns, dict(body)))
                self.events_received += 1
        return messages

    def _drain(self) -> None:
        for _ in range(1000):  # bounded: a flood cannot keep us here
            if not self.pump(0):
                return

    # -- one line -------------------------------------------------------------------------------

    def execute(self, line: str, where: str = "") -> bool:
        """Run one line (possibly several ``;``-separated commands); False if any did not end OK.

        Raises _Quit on quit/exit. Failures are printed and kept in ``self.failures``.
        """
        ok = True
        for part in split_commands(line):
            ok = self._execute_one(part, where) and ok
        return ok

    def _fail(self, where: str, line: str, text: str) -> bool:
        self.failures.append(Failure(where, line, text))
        print(text, file=self.err if not self.interactive else self.out, flush=True)
        return False

    def _execute_one(self, line: str, where: str) -> bool:
        try:
            words = tokenize(line)
        except UsageError as exc:
            self.commands_run += 1
            return self._fail(where, line, str(exc))
        if not words:
            return True
        head, rest = words[0], words[1:]
        if head in ("quit", "exit"):
            raise _Quit
        self.commands_run += 1
        try:
            if head in self.dictionary.commands:
                return self._command(self.dictionary.commands[head], rest, line, where)
            handler = getattr(self, f"_do_{head}", None) if head in BUILTINS else None
            if handler is None:
                known = list(BUILTINS) + list(self.dictionary.commands)
                raise UsageError(f"unknown command {head!r}{_suggest(head, known)}; type help for the list")
            return handler(rest, line, where)
        except UsageError as exc:
            return self._fail(where, line, str(exc))
        except Exception as exc:  # noqa: BLE001 - a lost link must not take the operator's prompt with it
            return self._fail(where, line, f"{head}: {type(exc).__name__}: {exc}")

    # -- dictionary commands --------------------------------------------------------------------

    def _command(self, command: CommandDef, tokens: list[str], line: str, where: str) -> bool:
        try:
            args = command.parse_text_args(tokens)
        except ValueError as exc:
            return self._fail(where, line, f"FORMAT_ERROR {command.name} (not sent): {exc}\n  usage: {command.usage()}")
        from flight.command_status import CommandRejected

        try:
            command.validate_args(args)
        except CommandRejected as rejected:
            return self._fail(where, line, f"{rejected.status} {command.name} (not sent): {rejected.reason}\n"
                                           f"  usage: {command.usage()}")
        return self.send(command.name, args, line, where)

    def send(self, name: str, args: dict[str, Any], line: str, where: str = "") -> bool:
        try:
            result = self.client.send_command(name, args, self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - a link error is this command's failure, not a crash
            return self._fail(where, line, f"LINK_ERROR {name}: {type(exc).__name__}: {exc}")
        if result.status == "OK":
            self._print(f"OK {name}" + (f": {result.reason}" if result.reason else ""))
            return True
        return self._fail(where, line, f"{result.status} {name}: {result.reason}")

    # -- console words --------------------------------------------------------------------------

    def _do_help(self, rest: list[str], line: str, where: str) -> bool:
        if len(rest) > 1:
            raise UsageError(f"help takes one name (usage: {BUILTINS['help'][0]})")
        self._print(self.help_text(rest[0] if rest else None))
        return True

    def help_text(self, name: str | None = None) -> str:
        d = self.dictionary
        if name is None:
            lines = ["Console words:"]
            for word, (usage, text) in BUILTINS.items():
                if word != "exit":
                    lines += [f"  {usage}", f"      {text}"]
            lines += ["", "Commands (component.OPCODE arg=value ...; help NAME for one; * hazardous, arm first):"]
            for component in sorted(d.components):
                opcodes = [c.opcode + ("*" if c.hazardous else "") for c in d.commands_of(component).values()]
                if opcodes:
                    lines.append(f"  {component + ':':<14} {' '.join(opcodes)}")
            return "\n".join(lines)
        if name in BUILTINS:
            usage, text = BUILTINS[name]
            return f"{usage}\n  {text}"
        if name in d.commands:
            return d.commands[name].help_text()
        if name in d.components:
            comp = d.components[name]
            lines = [f"{name}: {comp.description}"]
            lines += [f"  {c.name:<32} {c.description}" + ("  (HAZARDOUS)" if c.hazardous else "")
                      for c in d.commands_of(name).values()]
            lines.append(f"  (channels {name} for its telemetry, events --list {name} for its events)")
            return "\n".join(lines)
        channel = d.channel(name)
        if channel is not None:
            return channel_line(channel)
        if name in d.events:
            event = d.events[name]
            return f"{event.full_name} ({event.severity}): {event.description}"
        known = list(BUILTINS) + list(d.commands) + list(d.components) + list(d.channels) + list(d.events)
        raise UsageError(f"no command, component, channel or event {name!r}{_suggest(name, known)}")

    def _do_channels(self, rest: list[str], line: str, where: str) -> bool:
        if len(rest) > 1:
            raise UsageError(f"channels takes one prefix (usage: {BUILTINS['channels'][0]})")
        prefix = rest[0] if rest else ""
        if prefix in self.dictionary.components:
            prefix += "."
        channels = [c for n, c in sorted(self.dictionary.channels.items()) if n.startswith(prefix)]
        patterns = [p for comp in sorted(self.dictionary.components)
                    for p in self.dictionary.components[comp].channel_patterns if f"{comp}.{p.name}".startswith(prefix)]
        if not channels and not patterns:
            raise UsageError(f"no channel starts with {prefix!r}"
                             f"{_suggest(prefix.rstrip('.'), list(self.dictionary.components))}")
        for channel in channels + patterns:
            self._print(channel_line(channel))
        return True

    def _resolve_channel(self, name: str) -> ChannelDef:
        channel = self.dictionary.channel(name)
        if channel is None:
            raise UsageError(f"no telemetry channel {name!r}{_suggest(name, self.dictionary.channels)}"
                             f"; channels lists them")
        return channel

    def _do_watch(self, rest: list[str], line: str, where: str) -> bool:
        parser = _LineParser(prog="watch", add_help=False)
        parser.add_argument("channels", nargs="+")
        parser.add_argument("--for", dest="for_s", type=_positive_float, default=None)
        parser.add_argument("--count", type=_positive_int, default=None)
        opts = parser.parse_args(rest)
        channels = [self._resolve_channel(n) for n in opts.channels]
        bounded = opts.for_s is not None or opts.count is not None
        if not bounded and not self.interactive:
            raise UsageError("watch in a script needs --for SECONDS or --count N")
        topics = {c.topic for c in channels}
        keys = {(c.topic, c.name) for c in channels}
        live = self.color and self.interactive  # rewrite one line in a terminal
        self._drain()
        values = {c.full_name: self.latest[c.full_name] for c in channels if c.full_name in self.latest}
        samples = 0
        shown_t_ns: int | None = None
        start = last = self.clock()
        gap_s = self._link_timeout_s()

        def show(t_ns: int) -> bool:
            """One line per mission time (a tick's packets on several topics make one sample)."""
            nonlocal samples, last, shown_t_ns
            text = format_watch_line(channels, values, self.color)
            if t_ns == shown_t_ns:  # the rest of a tick that came in a later batch
                if live:
                    self._print("\r\033[K" + text, end="")
                return False
            samples += 1
            last = self.clock()
            shown_t_ns = t_ns
            self._print("\r\033[K" + text if live else text, end="" if live else "\n")
            return opts.count is not None and samples >= opts.count

        try:
            while True:
                now = self.clock()
                if opts.for_s is not None and now - start >= opts.for_s:
                    break
                if bounded and now - last > gap_s:
                    self._end_live(live)
                    names = ", ".join(c.full_name for c in channels)
                    return self._fail(where, line, f"watch: no sample of {names} within {gap_s:g} s")
                wait_s = PUMP_SLICE_S if opts.for_s is None else min(PUMP_SLICE_S, opts.for_s - (now - start))
                pending_t_ns: int | None = None
                for message in self.pump(max(1, round(wait_s * 1000))):
                    hits = [k for k in message.body if (message.topic, k) in keys] if message.topic in topics else []
                    if not hits:
                        continue
                    if pending_t_ns is not None and message.t_ns != pending_t_ns and show(pending_t_ns):
                        self._end_live(live)
                        return True
                    for key in hits:
                        values[f"{message.topic[4:]}.{key}"] = (message.body[key], message.t_ns)
                    pending_t_ns = message.t_ns
                if pending_t_ns is not None and show(pending_t_ns):
                    self._end_live(live)
                    return True
        except KeyboardInterrupt:
            self._end_live(live)
            return True
        self._end_live(live)
        if bounded and samples == 0:
            names = ", ".join(c.full_name for c in channels)
            return self._fail(where, line, f"watch: no sample of {names} in {opts.for_s:g} s")
        return True

    def _end_live(self, live: bool) -> None:
        if live:
            self._print()

    def _event_filter(self, names: list[str], severity: str | None) -> Callable[[EventRecord], bool]:
        for name in names:
            known = (name in self.dictionary.events or name in self.dictionary.components
                     or any(e.name == name for e in self.dictionary.events.values()))
            if not known:
                raise UsageError(f"no event or component {name!r}{_suggest(name, self.dictionary.events)}")
        rank = SEVERITIES.index(severity) if severity is not None else len(SEVERITIES)

        def matches(event: EventRecord) -> bool:
            sev = SEVERITIES.index(event.severity) if event.severity in SEVERITIES else 0
            if sev > rank:
                return False
            if not names:
                return True
            component, _, short = event.name.partition(".")
            return any(n in (event.name, component, short) for n in names)

        return matches

    def _do_events(self, rest: list[str], line: str, where: str) -> bool:
        parser = _LineParser(prog="events", add_help=False)
        parser.add_argument("names", nargs="*")
        parser.add_argument("--severity", choices=SEVERITIES, default=None)
        parser.add_argument("--follow", action="store_true")
        parser.add_argument("--list", action="store_true")
        parser.add_argument("--for", dest="for_s", type=_positive_float, default=None)
        parser.add_argument("--count", type=_positive_int, default=None)
        opts = parser.parse_args(rest)
        if opts.list:
            prefix = opts.names[0] if opts.names else ""
            found = [e for n, e in sorted(self.dictionary.events.items()) if n.startswith(prefix)]
            if not found:
                raise UsageError(f"no event starts with {prefix!r}")
            for e in found:
                throttle = f", throttle {e.throttle}" if e.throttle else ""
                self._print(f"{e.full_name:<40} {e.severity}{throttle}\n    {e.description}")
            return True
        matches = self._event_filter(opts.names, opts.severity)
        if not opts.follow:
            if opts.for_s is not None or opts.count is not None:
                raise UsageError("events: --for and --count go with --follow")
            self._drain()
            shown = [e for e in self.events if matches(e)]
            for event in shown:
                self._print(format_event(event, self.color))
            if not shown:
                self._print("(no matching events since connecting)")
            return True
        if opts.for_s is None and opts.count is None and not self.interactive:
            raise UsageError("events --follow in a script needs --for SECONDS or --count N")
        self._drain()  # follow shows only what comes next
        start = last = self.clock()
        seen = 0
        gap_s = self._link_timeout_s()
        try:
            while True:
                now = self.clock()
                if opts.for_s is not None and now - start >= opts.for_s:
                    return True
                if opts.for_s is None and opts.count is not None and now - last > gap_s:
                    return self._fail(where, line,
                                      f"events: {seen} of {opts.count} events, then none within {gap_s:g} s")
                wait_s = PUMP_SLICE_S if opts.for_s is None else min(PUMP_SLICE_S, opts.for_s - (now - start))
                before = self.events_received
                self.pump(max(1, round(wait_s * 1000)))
                arrived = min(self.events_received - before, len(self.events))
                fresh = list(self.events)[len(self.events) - arrived:] if arrived else []
                for event in fresh:
                    if matches(event):
                        seen += 1
                        last = self.clock()
                        self._print(format_event(event, self.color))
                        if opts.count is not None and seen >= opts.count:
                            return True
        except KeyboardInterrupt:
            self._print()
            return True

    def _do_arm(self, rest: list[str], line: str, where: str) -> bool:
        if len(rest) != 1:
            raise UsageError(f"usage: {BUILTINS['arm'][0]}")
        name = rest[0]
        hazardous = self.dictionary.hazardous_commands()
        if name not in hazardous:
            raise UsageError(f"{name!r} is not a hazardous command (hazardous: {', '.join(hazardous) or 'none'})")
        return self.send("dispatcher.ARM", {"command": name}, line, where)

    def _do_ask(self, rest: list[str], line: str, where: str) -> bool:
        question = " ".join(rest).strip()
        if not question:
            raise UsageError(f"usage: {BUILTINS['ask'][0]}")
        self._drain()
        # A fresh subscription takes a moment to join (slow joiner): wait for telemetry to flow,
        # or the answer event could pass before it does.
        settle_until = self.clock() + self._link_timeout_s()
        while not self.latest and self.clock() < settle_until:
            self.pump(max(1, round(PUMP_SLICE_S * 1000)))
        before = self.events_received
        if not self.send("assistant.ASK", {"question": question}, line, where):
            return False
        deadline = self.clock() + self._link_timeout_s()
        while self.clock() < deadline:
            fresh = list(self.events)[len(self.events) - min(self.events_received - before, len(self.events)):] \
                if self.events_received > before else []
            for event in fresh:
                if event.name == "assistant.ASSISTANT_ANSWER" and event.fields.get("question") == question:
                    self._print(f"{event.fields.get('answer')}   ({event.fields.get('source')})")
                    return True
            self.pump(max(1, round(PUMP_SLICE_S * 1000)))
        return self._fail(where, line, f"ask: no ASSISTANT_ANSWER within {self._link_timeout_s():g} s")

    def _do_wait(self, rest: list[str], line: str, where: str) -> bool:
        try:
            seconds = _positive_float(rest[0]) if len(rest) == 1 else None
        except ValueError:
            seconds = None
        if seconds is None:
            raise UsageError(f"usage: {BUILTINS['wait'][0]} (a number >= 0)")
        end = self.clock() + seconds
        try:
            while (left := end - self.clock()) > 0:
                self.pump(max(1, round(min(left, PUMP_SLICE_S) * 1000)))
        except KeyboardInterrupt:
            self._print()
        return True

    # -- scripts --------------------------------------------------------------------------------

    def run_lines(self, lines: Iterable[str], source: str, stop_on_failure: bool = False) -> bool:
        """Run script lines; False on the first failure when stop_on_failure. Raises _Quit on quit."""
        for number, line in enumerate(lines, 1):
            if not self.execute(line.rstrip("\n"), f"{source}:{number}") and stop_on_failure:
                return False
        return True

    def summary(self) -> str:
        if not self.failures:
            return ""
        lines = [f"{len(self.failures)} of {self.commands_run} commands did not end OK:"]
        for f in self.failures:
            where = f"{f.where}: " if f.where else ""
            lines.append(f"  {where}{f.line}: {f.text.splitlines()[0]}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------- interactive


class ConsoleShell(cmd.Cmd):
    """The interactive prompt: readline history and completion around a ConsoleSession."""

    prompt = "sunlit> "

    def __init__(self, session: ConsoleSession, history_path: Path | None = None,
                 stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        super().__init__(stdin=stdin, stdout=stdout)
        if stdin is not None:
            self.use_rawinput = False
        self.session = session
        self.history_path = history_path
        self._matches: list[str] = []

    def preloop(self) -> None:
        readline = _readline()
        if readline is not None and self.use_rawinput:
            readline.set_completer_delims(" \t\n;")

    def load_history(self) -> None:
        readline = _readline()
        if readline is None or self.history_path is None or not self.use_rawinput:
            return
        readline.set_history_length(HISTORY_LENGTH)
        try:
            readline.read_history_file(self.history_path)
        except OSError:  # none yet, or unreadable: start a fresh one
            pass

    def save_history(self) -> None:
        readline = _readline()
        if readline is None or self.history_path is None or not self.use_rawinput:
            return
        try:
            self.history_path.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(self.history_path)
        except OSError as exc:
            print(f"(history not saved: {exc})", file=self.session.err)

    def emptyline(self) -> bool:
        return False  # cmd.Cmd would repeat the last command: never for a spacecraft

    def onecmd(self, line: str) -> bool:
        if line == "EOF":
            self.session._print()
            return True
        try:
            self.session.execute(line)
        except _Quit:
            return True
        return False

    def complete(self, text: str, state: int) -> str | None:
        if state == 0:
            readline = _readline()
            line = readline.get_line_buffer()[: readline.get_endidx()] if readline is not None else text
            try:
                self._matches = complete_line(self.session.dictionary, line)
            except Exception:  # noqa: BLE001 - completion must never break the prompt
                self._matches = []
        return self._matches[state] if state < len(self._matches) else None

    def run(self, intro: str | None = None) -> None:
        """The loop: Ctrl-C clears the line, Ctrl-D or quit leaves; history loaded once, saved at the end."""
        self.load_history()
        try:
            while True:
                try:
                    self.cmdloop(intro)
                    return
                except KeyboardInterrupt:
                    self.session._print("^C")
                    intro = ""
        finally:
            self.save_history()


def _readline():
    try:
        import readline
    except ImportError:  # not on every platform; the prompt works without it
        return None
    return readline


# --------------------------------------------------------------------------------- entry point


def add_console_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `sunlit console` (tools/cli.py adds them to its subparser)."""
    parser.add_argument("endpoint",
                        help="the stack's command endpoint, e.g. tcp://127.0.0.1:5555 (sunlit run prints it)")
    parser.add_argument("scripts", nargs="*", metavar="SCRIPT",
                        help="run these script files (console lines, # comments; '-' reads stdin) and exit")
    parser.add_argument("-c", "--command", dest="commands", action="append", default=[], metavar="LINE",
                        help="run this line and exit (repeatable; ';' separates commands); runs before SCRIPTs")
    parser.add_argument("-f", "--file", dest="files", action="append", default=[], metavar="SCRIPT",
                        help="run this script file too (repeatable; same as a SCRIPT argument)")
    parser.add_argument("--keys", type=Path, default=None, metavar="DIR",
                        help="key folder: uses DIR/server.key and DIR/<client>.key_secret")
    parser.add_argument("--client", default="operator", metavar="NAME",
                        help="client name whose secret key to use from --keys (default: operator)")
    parser.add_argument("--client-key", type=Path, default=None, metavar="PATH", help="this client's .key_secret file")
    parser.add_argument("--server-key", type=Path, default=None, metavar="PATH", help="the stack's server.key file")
    parser.add_argument("--insecure", action="store_true", help="no CURVE (a bench stack run with --insecure)")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S",
                        help="seconds to wait for the welcome and for each command's response (default: 5)")
    parser.add_argument("--dictionary", type=Path, default=None, metavar="DIR",
                        help="dictionary folder to check commands against (default: the packaged one)")
    parser.add_argument("--history", type=Path, default=DEFAULT_HISTORY, metavar="PATH",
                        help="history file of the interactive prompt (default: ~/.sunlit_history)")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="highlight limits and severities with ANSI colours (default: when a terminal)")
    parser.add_argument("--stop-on-failure", action="store_true",
                        help="in scripts: stop at the first command that does not end OK")
    return parser


def build_parser() -> argparse.ArgumentParser:
    return add_console_arguments(argparse.ArgumentParser(
        prog="sunlit console", description="Command a running stack: an interactive prompt, or -c/script lines "
                                           "whose exit status says whether every command ended OK.",
        epilog="Lines: component.OPCODE arg=value ... (or values in declared order), help [NAME], channels, "
               "events, watch, arm, wait, quit; ';' separates, '#' comments. Exit status: 0 every command "
               "ended OK, 1 some did not, 2 usage or connection error."))


def _key_paths(opts: argparse.Namespace) -> tuple[Path | None, Path | None]:
    """(client secret, server public) from the options; UsageError when they do not add up."""
    explicit = (opts.client_key, opts.server_key)
    if opts.insecure:
        if opts.keys is not None or any(p is not None for p in explicit):
            raise UsageError("--insecure takes no keys")
        return None, None
    if any(p is not None for p in explicit):
        if opts.keys is not None or None in explicit:
            raise UsageError("give --client-key and --server-key together, or --keys DIR")
        client, server = explicit
    elif opts.keys is not None:
        client, server = opts.keys / f"{opts.client}.key_secret", opts.keys / "server.key"
    else:
        raise UsageError("no keys: give --keys DIR (or --client-key PATH --server-key PATH), "
                         "or --insecure for a stack run with --insecure")
    for path in (client, server):
        if not path.is_file():
            raise UsageError(f"{path}: no such key file")
    return client, server


def _wants_color(choice: str, stream: TextIO) -> bool:
    if choice != "auto":
        return choice == "always"
    return stream.isatty() and os.environ.get("TERM") != "dumb" and "NO_COLOR" not in os.environ


def _read_scripts(paths: list[str], stdin: TextIO) -> list[tuple[str, list[str]]]:
    scripts = []
    for path in paths:
        if path == "-":
            scripts.append(("<stdin>", stdin.read().splitlines()))
            continue
        try:
            scripts.append((path, Path(path).read_text().splitlines()))
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read script {path}: {exc}") from None
    return scripts


def run_console(argv: list[str] | argparse.Namespace | None = None, *, client_factory: Callable[..., Any] | None = None,
                stdin: TextIO | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """`sunlit console`: 0 every command OK, 1 any not, 2 usage or connection error.

    ``argv`` is the argument list (without "console") or an already parsed Namespace.
    ``client_factory(endpoint, client_secret_path, server_public_path, timeout_s=...)`` makes
    the link (default: tools.ground_client.GroundClient).
    """
    stdin = stdin if stdin is not None else sys.stdin
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    if isinstance(argv, argparse.Namespace):
        opts = argv
    else:
        try:
            # intermixed: script names may follow options (``ENDPOINT --keys k pass.txt``)
            opts = build_parser().parse_intermixed_args(argv)
        except SystemExit as exc:  # argparse already printed the usage
            return int(exc.code or 0)

    def usage(text: str) -> int:
        print(f"sunlit console: {text}", file=err, flush=True)
        return 2

    if not (opts.timeout > 0 and math.isfinite(opts.timeout)):
        return usage(f"--timeout must be > 0 seconds, got {opts.timeout}")
    try:
        client_key, server_key = _key_paths(opts)
        scripts = _read_scripts([*opts.scripts, *getattr(opts, "files", [])], stdin)
    except UsageError as exc:
        return usage(str(exc))
    try:
        dictionary = load_dictionary(opts.dictionary)
    except ValueError as exc:
        return usage(f"dictionary: {exc}")
    interactive = not opts.commands and not scripts
    if interactive and not stdin.isatty():
        scripts, interactive = [("<stdin>", stdin.read().splitlines())], False

    if client_factory is None:
        from tools.ground_client import GroundClient as client_factory  # noqa: N813
    try:
        client = client_factory(opts.endpoint, client_key, server_key, timeout_s=opts.timeout)
    except Exception as exc:  # noqa: BLE001 - any failure to connect is a clear message, not a traceback
        return usage(f"cannot connect to {opts.endpoint}: {exc}")
    try:
        remote_sha = getattr(client, "dictionary_sha256", "")
        local_sha = dictionary_sha256(dictionary)
        if remote_sha and remote_sha != local_sha:
            print(f"sunlit console: warning: the stack's dictionary (sha256 {remote_sha[:12]}) differs from this "
                  f"console's ({local_sha[:12]}); commands are checked against this console's", file=err, flush=True)
        session = ConsoleSession(client, dictionary, out=out, err=err, color=_wants_color(opts.color, out),
                                 interactive=interactive, timeout_s=opts.timeout)
        try:
            session.subscribe()
        except Exception as exc:  # noqa: BLE001
            print(f"sunlit console: warning: no telemetry subscription ({exc}); watch and events will be empty",
                  file=err, flush=True)
        if interactive:
            return _interactive(session, client, opts)
        try:
            for line in opts.commands:
                if not session.execute(line, "-c") and opts.stop_on_failure:
                    raise _Quit
            for source, lines in scripts:
                if not session.run_lines(lines, source, opts.stop_on_failure):
                    raise _Quit
        except _Quit:
            pass
        if session.failures:
            print(f"sunlit console: {session.summary()}", file=err, flush=True)
            return 1
        return 0
    finally:
        client.close()


def _interactive(session: ConsoleSession, client: Any, opts: argparse.Namespace) -> int:
    role = getattr(client, "role", "") or "?"
    name = getattr(client, "client_name", "") or "?"
    secure = "CURVE" if not opts.insecure else "INSECURE"
    utc = getattr(client, "mission_utc", "")
    intro = (f"Connected to {opts.endpoint} as {name} (role {role}, {secure})"
             + (f"; mission time {utc}" if utc else "") + ".\n"
             "Type help for commands, Tab to complete, Ctrl-D or quit to leave.")
    history = Path(os.path.expanduser(str(opts.history))) if opts.history else None
    shell = ConsoleShell(session, history)
    shell.run(intro)
    return 0


if __name__ == "__main__":
    sys.exit(run_console())
