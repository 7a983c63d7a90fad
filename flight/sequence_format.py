"""Stored command sequences: the text format operators write, checked against the dictionary.

Pure (no bus, no clock): the ground checker (``tools/sequence_tool.py``) and the onboard sequencer
(``flight/sequencer.py``) both parse and check with this module, so a file that passes on the
ground passes on board. The model is F Prime's ``.seq`` format.

One command per line: ``<time tag> <component.OPCODE> [key=value ...]``. Comments start with ``;``
or ``#`` (outside quotes) and run to the end of the line; blank lines are ignored. Arguments are
``key=value`` (or positional, in the dictionary's order), tokenized like a shell (``shlex``), so a
string with spaces is quoted: ``prompt="Where are you?"``. Every argument is checked against the
dictionary: a rejection names the argument and its valid range.

Time tags (``HH`` may exceed 23; fractions to the nanosecond):

- ``R[+]HH:MM:SS[.fff]``: this long after the previous command was issued (the first command:
  after the sequence started). ``R00:00:00`` is "as soon as the previous command has answered".
- ``E[+]HH:MM:SS[.fff]``: at this offset from the sequence start (the epoch of the sequence).
- ``A<YYYY-MM-DDTHH:MM:SS[.fff]Z>``: at this UTC (``Z`` or ``+00:00``: absolute times are UTC).

Commands run strictly in file order, one at a time: each waits for its time *and* for the previous
command's response. A command whose time has already passed when its turn comes (its predecessors
took longer) runs at once; the sequencer counts and reports it as late. On board, START refuses a
sequence that holds an absolute time already in the past (see ``flight/sequencer.py``).

Checks, all of them collected (every error of a file, each naming its line): bad time tag, unknown
command (with the nearest known name), bad argument, times that go backwards against an earlier
command timed on the same reference (absolute against absolute, start-relative against
start-relative), and a hazardous command not preceded by ``dispatcher.ARM command=<that command>``
within the arming window (60 s by default; the arming is used up by the command, cancelled by
``dispatcher.DISARM``, replaced by another ARM; an ARM and its command timed against different
references cannot be checked on the ground and are refused). The window is checked on the tagged
times; on board a command may issue up to a tick after its tag, so keep a hazardous command close
to its ARM (the dispatcher enforces the window again and the sequence stops if it has passed).

Example (``flight/sequences/example.seq`` is a longer one)::

    ; a short pass plan
    R00:00:00  modes.NOOP                               ; prove the command path
    R00:00:10  modes.SET_MODE mode=LOW_POWER
    R00:00:05  inference.ASK prompt="Where are you?" max_new_tokens=32
    E+00:02:00 modes.SET_MODE NOMINAL                   ; two minutes after the start
    A2025-11-02T06:45:00Z dispatcher.ARM command=eps.SET_SWITCH
    R00:00:05  eps.SET_SWITCH switch=gpu on=false       ; hazardous: armed 5 s before

The uplink form (``Sequence.to_uplink``) is a msgpack/JSON-able map ``{"format", "name", "steps"}``
with one ``[kind, t_ns, command, args, line]`` per step: ``kind`` "R"/"E"/"A", ``t_ns`` the delay
(R), the offset from the start (E) or the UTC in ns since 1970-01-01 (A), ``args`` the validated
arguments with defaults filled in. ``Sequence.from_uplink`` trusts none of it and checks it all again.
"""

from __future__ import annotations

import difflib
import re
import shlex
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from flight.command_status import CommandRejected

if TYPE_CHECKING:
    from flight.dictionary import Dictionary

__all__ = [
    "DEFAULT_ARMING_WINDOW_S",
    "DEFAULT_MAX_STEPS",
    "UPLINK_FORMAT",
    "Issue",
    "Sequence",
    "SequenceError",
    "Step",
    "check_name",
    "check_sequence",
    "format_utc_ns",
    "parse_sequence",
    "utc_ns",
]

NS_PER_S = 1_000_000_000
UPLINK_FORMAT = "sunlit-seq/1"
DEFAULT_ARMING_WINDOW_S = 60.0
DEFAULT_MAX_STEPS = 256
ARM_COMMAND = "dispatcher.ARM"
DISARM_COMMAND = "dispatcher.DISARM"
KINDS = ("R", "E", "A")
INT64_MAX = 2**63 - 1
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_DURATION_RE = re.compile(r"\+?(\d{1,6}):([0-5]\d):([0-5]\d)(?:\.(\d{1,9}))?", re.ASCII)
_ABSOLUTE_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|\+00:00)", re.ASCII)
MAX_LINE = 1_000_000
_TAG_FORMS = "R[+]HH:MM:SS[.fff], E[+]HH:MM:SS[.fff] or A<YYYY-MM-DDTHH:MM:SS[.fff]Z>"
_MAX_REPORTED = 5  # issues quoted in a one-line summary (a command's rejection reason)


# --------------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Issue:
    """One thing wrong with a sequence; ``line`` is the file line (None: the whole sequence)."""

    line: int | None
    message: str

    def __str__(self) -> str:
        return self.message if self.line is None else f"line {self.line}: {self.message}"


class SequenceError(ValueError):
    """A sequence failed its checks; ``issues`` holds every problem found, each naming its line."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))

    def summary(self, limit: int = _MAX_REPORTED) -> str:
        """The first few issues on one line (a command's rejection reason)."""
        shown = "; ".join(str(i) for i in self.issues[:limit])
        more = len(self.issues) - limit
        return shown + (f" (and {more} more)" if more > 0 else "")


@dataclass(frozen=True)
class Step:
    line: int
    kind: str  # "R": after the previous command; "E": from the sequence start; "A": UTC
    t_ns: int  # R: delay; E: offset from the start; A: UTC ns since 1970-01-01
    command: str
    args: dict[str, Any]

    def tag(self) -> str:
        if self.kind == "A":
            return "A" + format_utc_ns(self.t_ns)
        return ("R" if self.kind == "R" else "E+") + _format_duration(self.t_ns)

    def text(self) -> str:
        """The step as a canonical sequence line."""
        parts = [self.tag(), self.command]
        for key, value in self.args.items():
            shown = ("true" if value else "false") if type(value) is bool else (
                repr(value) if type(value) is float else str(value))
            if "".join(shown.splitlines()) != shown:
                raise ValueError(f"line {self.line}: argument {key!r} holds a line break; it cannot be written as text")
            parts.append(shlex.quote(f"{key}={shown}"))
        return " ".join(parts)


@dataclass(frozen=True)
class Sequence:
    name: str
    steps: tuple[Step, ...]

    @property
    def arms(self) -> bool:
        """True when the sequence arms hazardous commands (the dispatcher holds one arming at a time)."""
        return any(step.command == ARM_COMMAND for step in self.steps)

    def to_text(self) -> str:
        """Canonical text, each step on its original line number (comments dropped)."""
        lines = [""] * max(step.line for step in self.steps)
        for step in self.steps:
            lines[step.line - 1] = step.text()
        return "\n".join(lines) + "\n"

    def to_uplink(self) -> dict[str, Any]:
        return {
            "format": UPLINK_FORMAT,
            "name": self.name,
            "steps": [[s.kind, s.t_ns, s.command, dict(s.args), s.line] for s in self.steps],
        }

    @classmethod
    def from_uplink(cls, data: Any, dictionary: Dictionary | None = None, *,
                    arming_window_s: float = DEFAULT_ARMING_WINDOW_S,
                    max_steps: int = DEFAULT_MAX_STEPS) -> Sequence:
        """Rebuild a sequence from its uplink form, checking everything again (never trust the uplink)."""
        dictionary = _dictionary(dictionary)
        if type(data) is not dict:
            raise SequenceError([Issue(None, f"uplink: must be a map, got {_type_name(data)}")])
        issues: list[Issue] = []
        unknown = sorted(_short(k) for k in data if k not in ("format", "name", "steps"))
        if unknown:
            issues.append(Issue(None, f"uplink: unknown key {unknown[0]}"))
        if data.get("format") != UPLINK_FORMAT:
            issues.append(Issue(None, f"uplink: 'format' must be {UPLINK_FORMAT!r}, got {_short(data.get('format'))}"))
        name = data.get("name")
        problem = check_name(name)
        if problem is not None:
            issues.append(Issue(None, f"uplink: {problem}"))
        raw = data.get("steps")
        if type(raw) is not list:
            issues.append(Issue(None, f"uplink: 'steps' must be a list, got {_type_name(raw)}"))
            raise SequenceError(issues)
        if len(raw) > max_steps:
            issues.append(Issue(None, f"uplink: {len(raw)} steps, at most {max_steps}"))
            raise SequenceError(issues)
        drafts: list[_Draft] = []
        for index, item in enumerate(raw):
            draft = _draft_from_uplink(index, item, dictionary, issues, drafts[-1].line if drafts else 0)
            if draft is not None:
                drafts.append(draft)
        return _finish(name, drafts, issues, dictionary, arming_window_s, max_steps)


def check_name(name: Any) -> str | None:
    """Why ``name`` is not a valid sequence name, or None (1-32 of letters, digits, _ and -)."""
    if type(name) is not str or not _NAME_RE.fullmatch(name):
        return f"sequence name {_short(name)} must be 1 to 32 letters, digits, '_' or '-'"
    return None


def utc_ns(dt: datetime) -> int:
    """Ns since 1970-01-01 UTC of an aware datetime, exact in integers."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"a UTC time must be timezone-aware, got naive {dt.isoformat()}")
    return (dt - _UNIX_EPOCH) // timedelta(microseconds=1) * 1000


def format_utc_ns(value_ns: int) -> str:
    """ISO 8601 UTC ending in Z, with only the fraction digits needed (never raises)."""
    seconds, frac_ns = divmod(value_ns, NS_PER_S)
    try:
        text = (_UNIX_EPOCH + timedelta(seconds=seconds)).replace(tzinfo=None).isoformat()
    except OverflowError:
        return f"{value_ns} ns after 1970-01-01"
    return text + (f".{frac_ns:09d}".rstrip("0") if frac_ns else "") + "Z"


# --------------------------------------------------------------------------------------- parsing


def parse_sequence(text: str, dictionary: Dictionary | None = None, *, name: str = "sequence",
                   arming_window_s: float = DEFAULT_ARMING_WINDOW_S,
                   max_steps: int = DEFAULT_MAX_STEPS) -> Sequence:
    """Parse and check sequence text; SequenceError lists every problem, each with its line."""
    dictionary = _dictionary(dictionary)
    issues: list[Issue] = []
    problem = check_name(name)
    if problem is not None:
        issues.append(Issue(None, problem))
    if type(text) is not str:
        raise SequenceError([*issues, Issue(None, f"sequence text must be a string, got {_type_name(text)}")])
    drafts = [draft for number, line in enumerate(text.splitlines(), start=1)
              if (draft := _draft_from_line(number, line, dictionary, issues)) is not None]
    return _finish(name, drafts, issues, dictionary, arming_window_s, max_steps)


def check_sequence(text: str, dictionary: Dictionary | None = None, *, name: str = "sequence",
                   arming_window_s: float = DEFAULT_ARMING_WINDOW_S,
                   max_steps: int = DEFAULT_MAX_STEPS) -> list[str]:
    """Every problem of a sequence text ("line N: ..."); empty when it is good to uplink."""
    try:
        parse_sequence(text, dictionary, name=name, arming_window_s=arming_window_s, max_steps=max_steps)
    except SequenceError as exc:
        return [str(issue) for issue in exc.issues]
    return []


@dataclass
class _Draft:
    """A step as read, before the whole-sequence checks; kind/t_ns None when its tag was bad."""

    line: int
    kind: str | None
    t_ns: int | None
    command: str | None  # None when unknown
    args: dict[str, Any] | None  # None when they did not validate
    hazardous: bool = False


def _draft_from_line(number: int, line: str, dictionary: Dictionary, issues: list[Issue]) -> _Draft | None:
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ";#"
    try:
        tokens = list(lexer)
    except ValueError as exc:  # an unclosed quote, a trailing backslash
        issues.append(Issue(number, f"cannot split the line into words: {exc}"))
        return None
    if not tokens:
        return None
    kind, t_ns, problem = _parse_tag(tokens[0])
    if problem is not None:
        issues.append(Issue(number, problem))
    if len(tokens) < 2:
        issues.append(Issue(number, f"no command after the time tag {_short(tokens[0])}"))
        return _Draft(number, kind, t_ns, None, None)
    name = tokens[1]
    command = _lookup(name, dictionary, number, issues)
    if command is None:
        return _Draft(number, kind, t_ns, None, None)
    try:
        parsed = command.parse_text_args(tokens[2:])
    except ValueError as exc:
        issues.append(Issue(number, _with_command(command.name, str(exc))))
        return _Draft(number, kind, t_ns, command.name, None, command.hazardous)
    return _Draft(number, kind, t_ns, command.name, _validated(command, parsed, number, issues), command.hazardous)


def _draft_from_uplink(index: int, item: Any, dictionary: Dictionary, issues: list[Issue],
                       previous_line: int) -> _Draft | None:
    where = f"uplink: steps[{index}]"
    if type(item) not in (list, tuple) or len(item) != 5:
        issues.append(Issue(None, f"{where}: must be [kind, t_ns, command, args, line], got {_short(item)}"))
        return None
    kind, t_ns, name, args, line = item
    if type(line) is not int or not previous_line < line <= MAX_LINE:
        issues.append(Issue(None, f"{where}: line must be an int in ({previous_line}, {MAX_LINE}] (lines increase), "
                                  f"got {_short(line)}"))
        return None
    problem = None
    if kind not in KINDS:
        problem = f"time tag kind must be one of {', '.join(KINDS)}, got {_short(kind)}"
    elif type(t_ns) is not int or not (0 <= t_ns <= INT64_MAX):
        problem = f"time must be an int of ns in [0, {INT64_MAX}], got {_short(t_ns)}"
    if problem is not None:
        issues.append(Issue(line, problem))
        kind, t_ns = None, None
    command = _lookup(name, dictionary, line, issues)
    if command is None:
        return _Draft(line, kind, t_ns, None, None)
    return _Draft(line, kind, t_ns, command.name, _validated(command, args, line, issues), command.hazardous)


def _parse_tag(token: str) -> tuple[str | None, int | None, str | None]:
    """(kind, t_ns, None) or (None, None, why the tag is bad)."""
    kind, body = token[:1], token[1:]
    if kind in ("R", "E"):
        match = _DURATION_RE.fullmatch(body)
        if match is not None:
            hours, minutes, seconds, frac = match.groups()
            whole_s = int(hours) * 3600 + int(minutes) * 60 + int(seconds)
            return kind, whole_s * NS_PER_S + _fraction_ns(frac), None
        hint = "; times never go backwards" if body.startswith("-") else ""
    elif kind == "A":
        match = _ABSOLUTE_RE.fullmatch(body)
        if match is not None:
            year, month, day, hour, minute, second, frac, _ = match.groups()
            try:
                dt = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                              tzinfo=timezone.utc)
            except ValueError as exc:
                return None, None, f"bad absolute time {_short(token)}: {exc}"
            value = utc_ns(dt) + _fraction_ns(frac)
            if not 0 <= value <= INT64_MAX:
                return None, None, f"absolute time {_short(token)} is outside 1970-01-01..2262-04-11"
            return kind, value, None
        hint = "; absolute times are UTC and end in Z" if body[:1].isdigit() else ""
    else:
        hint = ""
    return None, None, f"bad time tag {_short(token)} (expected {_TAG_FORMS}){hint}"


def _fraction_ns(frac: str | None) -> int:
    return int((frac or "").ljust(9, "0"))


def _format_duration(t_ns: int) -> str:
    seconds, frac_ns = divmod(t_ns, NS_PER_S)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}" + (f".{frac_ns:09d}".rstrip("0") if frac_ns else "")


def _lookup(name: Any, dictionary: Dictionary, line: int, issues: list[Issue]):
    try:
        return dictionary.command(name)
    except CommandRejected:
        pass
    hint = ""
    if type(name) is str:
        close = difflib.get_close_matches(name, list(dictionary.commands), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
    issues.append(Issue(line, f"unknown command {_short(name)}{hint}"))
    return None


def _validated(command, args: Any, line: int, issues: list[Issue]) -> dict[str, Any] | None:
    try:
        return command.validate_args(args)
    except CommandRejected as rejected:
        issues.append(Issue(line, _with_command(command.name, rejected.reason)))
        return None


def _with_command(name: str, reason: str) -> str:
    return reason if reason.startswith(name) else f"{name}: {reason}"


# ------------------------------------------------------------------------------ whole-sequence checks


def _finish(name: Any, drafts: list[_Draft], issues: list[Issue], dictionary: Dictionary,
            arming_window_s: float, max_steps: int) -> Sequence:
    if not drafts:
        issues.append(Issue(None, "the sequence has no commands"))
    elif len(drafts) > max_steps:
        issues.append(Issue(None, f"{len(drafts)} commands, at most {max_steps} in one sequence"))
    _check_timing(drafts, issues, dictionary, round(arming_window_s * NS_PER_S))
    if issues:
        raise SequenceError(sorted(issues, key=lambda i: -1 if i.line is None else i.line))
    steps = tuple(Step(d.line, d.kind, d.t_ns, d.command, d.args) for d in drafts)  # type: ignore[arg-type]
    return Sequence(name, steps)


def _check_timing(drafts: list[_Draft], issues: list[Issue], dictionary: Dictionary, window_ns: int) -> None:
    """Times that go backwards, and hazardous commands without their ARM in the window.

    A step's planned time is (reference, ns): reference "start" (E tags, and R chains from the start
    or from an E step) or "utc" (A tags and R chains from them); None when a tag before it was bad.
    Times are comparable only on the same reference.
    """
    planned: tuple[str, int] | None = None
    latest: dict[str, tuple[int, int]] = {}  # reference -> (latest ns, its line)
    # What the dispatcher's single arming holds after each step: (command, planned, line) or a note.
    armed: tuple[str, tuple[str, int] | None, int] | None = None
    armed_note = "no dispatcher.ARM before it"
    for index, draft in enumerate(drafts):
        if draft.kind is None:
            planned = None
        elif draft.kind == "R":
            if index == 0:
                planned = ("start", draft.t_ns)
            elif planned is not None:
                planned = (planned[0], planned[1] + draft.t_ns)
        else:
            planned = ("utc" if draft.kind == "A" else "start", draft.t_ns)
        if planned is not None:
            reference, t_ns = planned
            before = latest.get(reference)
            # Only E and A tags can go back (an R tag adds a delay; its chain's head is reported).
            if before is not None and t_ns < before[0] and draft.kind != "R":
                what = "absolute time" if reference == "utc" else "time from the sequence start"
                issues.append(Issue(draft.line, f"{what} {_planned_text(planned)} goes back before line "
                                                f"{before[1]}'s {_planned_text((reference, before[0]))}"))
            elif before is None or t_ns >= before[0]:
                latest[reference] = (t_ns, draft.line)
        if draft.command == ARM_COMMAND:
            target = draft.args.get("command") if draft.args is not None else None
            if target is None:
                armed, armed_note = None, f"the dispatcher.ARM on line {draft.line} is malformed"
                continue
            target_def = dictionary.commands.get(target)
            if target_def is None or not target_def.hazardous:
                hazardous = ", ".join(dictionary.hazardous_commands()) or "none"
                issues.append(Issue(draft.line, f"dispatcher.ARM: {_short(target)} is not a hazardous command "
                                                f"(hazardous: {hazardous})"))
                armed, armed_note = None, f"the dispatcher.ARM on line {draft.line} is malformed"
                continue
            armed = (target, planned, draft.line)
        elif draft.command == DISARM_COMMAND:
            armed, armed_note = None, f"the dispatcher.DISARM on line {draft.line} cancelled the arming"
        elif draft.hazardous:
            problem = _arming_problem(draft, planned, armed, armed_note, window_ns)
            if problem is not None:
                issues.append(Issue(draft.line, f"{draft.command} is hazardous: it must follow "
                                                f"'dispatcher.ARM command={draft.command}' within "
                                                f"{window_ns / NS_PER_S:g} s ({problem})"))
            armed, armed_note = None, f"the arming was used by line {draft.line}"


def _arming_problem(draft: _Draft, planned, armed, armed_note: str, window_ns: int) -> str | None:
    if armed is None:
        return armed_note
    target, arm_planned, arm_line = armed
    if target != draft.command:
        return f"line {arm_line} armed {target}"
    if planned is None or arm_planned is None:
        return f"its time after the ARM on line {arm_line} is unknown: fix the time tags"
    if planned[0] != arm_planned[0]:
        return (f"the ARM on line {arm_line} is timed from {_reference_text(arm_planned[0])} and this command "
                f"from {_reference_text(planned[0])}: the gap is unknown before the sequence runs")
    gap_ns = planned[1] - arm_planned[1]
    if gap_ns >= window_ns:
        return f"the ARM on line {arm_line} is {gap_ns / NS_PER_S:g} s earlier"
    return None


def _reference_text(reference: str) -> str:
    return "an absolute UTC" if reference == "utc" else "the sequence start"


def _planned_text(planned: tuple[str, int]) -> str:
    reference, t_ns = planned
    return format_utc_ns(t_ns) if reference == "utc" else "E+" + _format_duration(t_ns)


# --------------------------------------------------------------------------------------- helpers


def _dictionary(dictionary: Dictionary | None) -> Dictionary:
    if dictionary is not None:
        return dictionary
    from flight.dictionary import default_dictionary

    return default_dictionary()


def _type_name(value: Any) -> str:
    return "none" if value is None else type(value).__name__


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
