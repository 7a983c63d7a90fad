"""The command, telemetry and event dictionary: every command, channel and event declared once.

One TOML file per component in ``flight/dictionary/`` (the file stem is the component name):

- ``description``, ``commandable`` (the component runs a command server: NOOP and
  RESET_COUNTERS are implied), ``downlink`` (priority class of its telemetry on the downlink:
  ``housekeeping`` or ``bulk``; events always go first);
- ``[commands.OPCODE]``: ``description``, ``hazardous``, ``args`` (an ordered list of
  ``{name, type, units, min, max, values, min_length, max_length, default, description}``);
- ``[telemetry]``: channel name -> ``{type, units, min, max, values, optional, red_low,
  yellow_low, yellow_high, red_high, description}``; ``[telemetry_patterns]`` for families of
  channels (``"*_cycles"``);
- ``[events]``: name -> ``{severity, throttle, description}``.

Commands are named ``component.OPCODE``, channels ``component.channel`` (published in the body of
``tlm.<component>``), events ``component.NAME`` (on ``evt.<component>``). The dispatcher, the
command servers, the console, the sequence checker, the test API and the exports all read this.
Loading validates every declaration and names the file and key of anything wrong.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from flight.command_status import CommandRejected

ARG_TYPES = ("int", "float", "bool", "string", "enum")
CHANNEL_TYPES = ("int", "float", "bool", "string", "enum", "list", "map")
SEVERITIES = ("FATAL", "WARNING_HI", "WARNING_LO", "COMMAND", "ACTIVITY_HI", "ACTIVITY_LO", "DIAGNOSTIC")
DOWNLINK_CLASSES = ("housekeeping", "bulk")
LIMIT_KEYS = ("red_low", "yellow_low", "yellow_high", "red_high")
# Implied on every commandable component (cFS and F Prime habit).
BUILTIN_COMMANDS = {
    "NOOP": "Do nothing; answers OK (proves the command path)",
    "RESET_COUNTERS": "Zero the component's command counters",
}
# msgpack carries at most 64-bit integers; a declared int range never exceeds it.
INT64_MIN, INT64_MAX = -(2**63), 2**64 - 1


class DictionaryError(ValueError):
    """A dictionary file is malformed; the text names the file and the key."""


@dataclass(frozen=True)
class ArgDef:
    name: str
    type: str
    description: str = ""
    units: str = ""
    min: float | None = None
    max: float | None = None
    values: tuple[str, ...] = ()
    min_length: int = 0
    max_length: int = 1024
    default: Any = None
    required: bool = True

    def range_text(self) -> str:
        """The valid values, as a rejection or help text names them."""
        units = f" {self.units}" if self.units else ""
        if self.type == "enum":
            return "one of " + ", ".join(self.values)
        if self.type == "bool":
            return "true or false"
        if self.type == "string":
            return f"a string of {self.min_length} to {self.max_length} characters"
        lo = "-inf" if self.min is None else f"{self.min:g}"
        hi = "inf" if self.max is None else f"{self.max:g}"
        return f"{self.type} in [{lo}, {hi}]{units}"

    def validate(self, value: Any) -> Any:
        """Return the value in its canonical type, or raise CommandRejected naming this argument."""
        name = self.name
        kind = self.type
        if kind == "bool":
            if type(value) is not bool:
                raise CommandRejected("FORMAT_ERROR", f"argument {name!r} must be a bool, got {_type_name(value)}")
            return value
        if kind in ("int", "float"):
            if type(value) is bool or not isinstance(value, (int, float)):
                raise CommandRejected("FORMAT_ERROR", f"argument {name!r} must be {'an int' if kind == 'int' else 'a number'}, "
                                                      f"got {_type_name(value)}")
            if kind == "int" and not isinstance(value, int):
                raise CommandRejected("FORMAT_ERROR", f"argument {name!r} must be an int, got float {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise CommandRejected("VALIDATION_ERROR", f"argument {name!r}={value!r} is not finite; valid: {self.range_text()}")
            if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
                raise CommandRejected("VALIDATION_ERROR", f"argument {name!r}={_short(value)} out of range: {self.range_text()}")
            return int(value) if kind == "int" else float(value)
        # string and enum
        if type(value) is not str:
            raise CommandRejected("FORMAT_ERROR", f"argument {name!r} must be a string, got {_type_name(value)}")
        if kind == "enum":
            if value not in self.values:
                raise CommandRejected("VALIDATION_ERROR", f"argument {name!r}={_short(value)} is not {self.range_text()}")
            return value
        if not self.min_length <= len(value) <= self.max_length:
            raise CommandRejected("VALIDATION_ERROR", f"argument {name!r} has {len(value)} characters; valid: {self.range_text()}")
        return value

    def parse_text(self, text: str) -> Any:
        """Parse a value typed by a person (console, sequence file); raise ValueError saying why."""
        kind = self.type
        if kind == "bool":
            lowered = text.lower()
            if lowered in ("true", "on", "yes", "1"):
                return True
            if lowered in ("false", "off", "no", "0"):
                return False
            raise ValueError(f"argument {self.name!r}: {text!r} is not a bool (true/false)")
        if kind == "int":
            try:
                return int(text, 0)
            except ValueError:
                raise ValueError(f"argument {self.name!r}: {text!r} is not an int") from None
        if kind == "float":
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"argument {self.name!r}: {text!r} is not a number") from None
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
            return text[1:-1]
        return text


@dataclass(frozen=True)
class CommandDef:
    component: str
    opcode: str
    description: str = ""
    hazardous: bool = False
    args: tuple[ArgDef, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.component}.{self.opcode}"

    def arg(self, name: str) -> ArgDef | None:
        for arg in self.args:
            if arg.name == name:
                return arg
        return None

    def validate_args(self, args: Any) -> dict[str, Any]:
        """Validated arguments with defaults filled in; CommandRejected names what is wrong."""
        if args is None:
            args = {}
        if type(args) is not dict:
            raise CommandRejected("FORMAT_ERROR", f"{self.name}: 'args' must be a map, got {_type_name(args)}")
        known = {a.name for a in self.args}
        for key in args:
            if key not in known:
                listed = ", ".join(a.name for a in self.args) or "none"
                raise CommandRejected("FORMAT_ERROR", f"{self.name}: unknown argument {_short(key)} (arguments: {listed})")
        out: dict[str, Any] = {}
        for arg in self.args:
            if arg.name not in args:
                if arg.required:
                    raise CommandRejected("FORMAT_ERROR", f"{self.name}: missing argument {arg.name!r} ({arg.range_text()})")
                out[arg.name] = arg.default
                continue
            out[arg.name] = arg.validate(args[arg.name])
        return out

    def parse_text_args(self, tokens: list[str]) -> dict[str, Any]:
        """``key=value`` tokens (or positional values in declared order) -> typed args.

        Raises ValueError naming the argument. The result still goes through validate_args.
        """
        out: dict[str, Any] = {}
        positional = 0
        for token in tokens:
            key, sep, text = token.partition("=")
            if sep:
                arg = self.arg(key)
                if arg is None:
                    listed = ", ".join(a.name for a in self.args) or "none"
                    raise ValueError(f"{self.name}: unknown argument {key!r} (arguments: {listed})")
            else:
                if positional >= len(self.args):
                    raise ValueError(f"{self.name}: too many arguments (takes {len(self.args)})")
                arg, text = self.args[positional], token
                positional += 1
            if arg.name in out:
                raise ValueError(f"{self.name}: argument {arg.name!r} given twice")
            out[arg.name] = arg.parse_text(text)
        return out

    def usage(self) -> str:
        parts = [self.name] + [f"{a.name}=<{a.type}>" if a.required else f"[{a.name}=<{a.type}>]" for a in self.args]
        return " ".join(parts)

    def help_text(self) -> str:
        lines = [self.usage() + ("   (HAZARDOUS: arm first with dispatcher.ARM)" if self.hazardous else ""),
                 f"  {self.description}"]
        for a in self.args:
            default = "" if a.required else f" (default {a.default!r})"
            lines.append(f"  {a.name}: {a.range_text()}{default}. {a.description}")
        return "\n".join(lines)


@dataclass(frozen=True)
class ChannelDef:
    component: str
    name: str
    type: str
    description: str = ""
    units: str = ""
    min: float | None = None
    max: float | None = None
    values: tuple[str, ...] = ()
    optional: bool = False
    red_low: float | None = None
    yellow_low: float | None = None
    yellow_high: float | None = None
    red_high: float | None = None

    @property
    def full_name(self) -> str:
        return f"{self.component}.{self.name}"

    @property
    def topic(self) -> str:
        return f"tlm.{self.component}"

    def limit_state(self, value: Any) -> str:
        """"red_low", "yellow_low", "nominal", "yellow_high" or "red_high" (limits of numbers only)."""
        if type(value) is bool or not isinstance(value, (int, float)):
            return "nominal"
        if self.red_low is not None and value <= self.red_low:
            return "red_low"
        if self.red_high is not None and value >= self.red_high:
            return "red_high"
        if self.yellow_low is not None and value <= self.yellow_low:
            return "yellow_low"
        if self.yellow_high is not None and value >= self.yellow_high:
            return "yellow_high"
        return "nominal"

    def conforms(self, value: Any) -> str | None:
        """None if a published value fits the declaration, else why not."""
        if value is None:
            return None if self.optional else "is none but not optional"
        expected = {"int": (int,), "float": (int, float), "bool": (bool,), "string": (str,), "enum": (str,),
                    "list": (list, tuple), "map": (dict,)}[self.type]
        if (type(value) is bool) != (self.type == "bool") or not isinstance(value, expected):
            return f"is {_type_name(value)}, declared {self.type}"
        if self.type == "enum" and value not in self.values:
            return f"{value!r} is not one of {', '.join(self.values)}"
        return None


@dataclass(frozen=True)
class EventDef:
    component: str
    name: str
    severity: str
    description: str = ""
    throttle: int = 0  # 0: never throttled; else at most this many until counters are reset

    @property
    def full_name(self) -> str:
        return f"{self.component}.{self.name}"


@dataclass(frozen=True)
class ComponentDef:
    name: str
    description: str = ""
    commandable: bool = False
    downlink: str = "housekeeping"
    channel_patterns: tuple[ChannelDef, ...] = ()


@dataclass
class Dictionary:
    components: dict[str, ComponentDef] = field(default_factory=dict)
    commands: dict[str, CommandDef] = field(default_factory=dict)
    channels: dict[str, ChannelDef] = field(default_factory=dict)
    events: dict[str, EventDef] = field(default_factory=dict)

    def command(self, name: str) -> CommandDef:
        """The command ``component.OPCODE``, or CommandRejected(INVALID_OPCODE) naming it."""
        found = self.commands.get(name) if type(name) is str else None
        if found is None:
            raise CommandRejected("INVALID_OPCODE", f"no command {_short(name)} in the dictionary")
        return found

    def validate_command(self, name: Any, args: Any) -> tuple[CommandDef, dict[str, Any]]:
        command = self.command(name)
        return command, command.validate_args(args)

    def commands_of(self, component: str) -> dict[str, CommandDef]:
        prefix = component + "."
        return {c.opcode: c for n, c in self.commands.items() if n.startswith(prefix)}

    def channel(self, name: str) -> ChannelDef | None:
        """A channel by ``component.channel``; families declared by pattern resolve too."""
        found = self.channels.get(name)
        if found is not None:
            return found
        component, _, channel = name.partition(".")
        comp = self.components.get(component)
        if comp is None:
            return None
        for pattern in comp.channel_patterns:
            suffix = pattern.name.lstrip("*")
            if channel.endswith(suffix) and len(channel) > len(suffix):
                return ChannelDef(**{**pattern.__dict__, "name": channel})
        return None

    def event(self, component: str, name: str) -> EventDef | None:
        return self.events.get(f"{component}.{name}")

    def downlink_class(self, topic: str) -> str:
        """"event", "housekeeping" or "bulk" for a bus topic (unknown topics are bulk)."""
        kind, _, component = topic.partition(".")
        if kind in ("evt", "rsp"):
            return "event"
        comp = self.components.get(component)
        return comp.downlink if comp is not None else "bulk"

    def hazardous_commands(self) -> list[str]:
        return sorted(n for n, c in self.commands.items() if c.hazardous)

    def to_json(self) -> dict[str, Any]:
        def clean(obj: Any) -> dict[str, Any]:
            return {k: (list(v) if isinstance(v, tuple) else v) for k, v in obj.__dict__.items()
                    if v not in (None, "", ()) and k != "component"}

        return {
            "components": {
                name: {
                    "description": comp.description,
                    "commandable": comp.commandable,
                    "downlink": comp.downlink,
                    "commands": {c.opcode: {**clean(c), "args": [clean(a) for a in c.args]}
                                 for c in self.commands_of(name).values()},
                    "telemetry": {ch.name: clean(ch) for ch in self.channels.values() if ch.component == name},
                    "telemetry_patterns": {p.name: clean(p) for p in comp.channel_patterns},
                    "events": {e.name: clean(e) for e in self.events.values() if e.component == name},
                }
                for name, comp in sorted(self.components.items())
            }
        }


def _type_name(value: Any) -> str:
    return "none" if value is None else type(value).__name__


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------- loading


class _Reader:
    """Reads one table with typed getters; every error names the file and the key path."""

    def __init__(self, where: str, table: Any) -> None:
        if not isinstance(table, dict):
            raise DictionaryError(f"{where}: must be a table, got {type(table).__name__}")
        self.where = where
        self.table = table
        self._used: set[str] = set()

    def get(self, key: str, kinds: tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        self._used.add(key)
        if key not in self.table:
            if required:
                raise DictionaryError(f"{self.where}: missing key {key!r}")
            return default
        value = self.table[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = "/".join(k.__name__ for k in kinds)
            raise DictionaryError(f"{self.where}.{key}: must be {names}, got {type(value).__name__}")
        return value

    def number(self, key: str) -> float | None:
        value = self.get(key, (int, float))
        return None if value is None else value

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self._used)
        if unknown:
            raise DictionaryError(f"{self.where}: unknown key {unknown[0]!r}")


def _read_arg(where: str, table: Any) -> ArgDef:
    r = _Reader(where, table)
    name = r.get("name", (str,), required=True)
    kind = r.get("type", (str,), required=True)
    if kind not in ARG_TYPES:
        raise DictionaryError(f"{where}.type: {kind!r} is not one of {', '.join(ARG_TYPES)}")
    values = tuple(r.get("values", (list,), []))
    if kind == "enum" and (not values or not all(isinstance(v, str) for v in values)):
        raise DictionaryError(f"{where}.values: an enum needs a non-empty list of strings")
    lo, hi = r.number("min"), r.number("max")
    if lo is not None and hi is not None and lo > hi:
        raise DictionaryError(f"{where}: min {lo} > max {hi}")
    if kind == "int":
        lo = INT64_MIN if lo is None else lo
        hi = INT64_MAX if hi is None else hi
    arg = ArgDef(
        name=name, type=kind, description=r.get("description", (str,), ""), units=r.get("units", (str,), ""),
        min=lo, max=hi, values=values,
        min_length=r.get("min_length", (int,), 0), max_length=r.get("max_length", (int,), 1024),
    )
    if "default" in r.table:
        default = r.get("default", (int, float, bool, str))
        try:
            default = arg.validate(default)
        except CommandRejected as exc:
            raise DictionaryError(f"{where}.default: {exc.reason}") from None
        arg = ArgDef(**{**arg.__dict__, "default": default, "required": False})
    r.finish()
    return arg


def _read_channel(where: str, component: str, name: str, table: Any) -> ChannelDef:
    r = _Reader(where, table)
    kind = r.get("type", (str,), required=True)
    if kind not in CHANNEL_TYPES:
        raise DictionaryError(f"{where}.type: {kind!r} is not one of {', '.join(CHANNEL_TYPES)}")
    values = tuple(r.get("values", (list,), []))
    if kind == "enum" and not values:
        raise DictionaryError(f"{where}.values: an enum needs a non-empty list of strings")
    limits = {key: r.number(key) for key in LIMIT_KEYS}
    set_limits = [limits[k] for k in LIMIT_KEYS if limits[k] is not None]
    if set_limits != sorted(set_limits):
        raise DictionaryError(f"{where}: limits must be ordered red_low <= yellow_low <= yellow_high <= red_high")
    channel = ChannelDef(
        component=component, name=name, type=kind, description=r.get("description", (str,), ""),
        units=r.get("units", (str,), ""), min=r.number("min"), max=r.number("max"), values=values,
        optional=r.get("optional", (bool,), False), **limits,
    )
    r.finish()
    return channel


def _read_component(dictionary: Dictionary, component: str, where: str, data: dict) -> None:
    r = _Reader(where, data)
    commandable = r.get("commandable", (bool,), False)
    downlink = r.get("downlink", (str,), "housekeeping")
    if downlink not in DOWNLINK_CLASSES:
        raise DictionaryError(f"{where}.downlink: {downlink!r} is not one of {', '.join(DOWNLINK_CLASSES)}")
    commands = r.get("commands", (dict,), {})
    if commands and not commandable:
        raise DictionaryError(f"{where}: declares commands but not 'commandable = true'")
    if commandable:
        for opcode, text in BUILTIN_COMMANDS.items():
            dictionary.commands[f"{component}.{opcode}"] = CommandDef(component, opcode, text)
    for opcode, table in commands.items():
        cwhere = f"{where}.commands.{opcode}"
        if not opcode.isupper() or not opcode.replace("_", "").isalnum():
            raise DictionaryError(f"{cwhere}: an opcode is UPPER_SNAKE_CASE")
        if opcode in BUILTIN_COMMANDS:
            raise DictionaryError(f"{cwhere}: {opcode} is built in")
        cr = _Reader(cwhere, table)
        args_list = cr.get("args", (list,), [])
        args = tuple(_read_arg(f"{cwhere}.args[{i}]", a) for i, a in enumerate(args_list))
        names = [a.name for a in args]
        if len(set(names)) != len(names):
            raise DictionaryError(f"{cwhere}.args: duplicate argument name")
        dictionary.commands[f"{component}.{opcode}"] = CommandDef(
            component, opcode, cr.get("description", (str,), ""), cr.get("hazardous", (bool,), False), args)
        cr.finish()
    for name, table in r.get("telemetry", (dict,), {}).items():
        dictionary.channels[f"{component}.{name}"] = _read_channel(f"{where}.telemetry.{name}", component, name, table)
    patterns = tuple(
        _read_channel(f"{where}.telemetry_patterns.{name}", component, name, table)
        for name, table in r.get("telemetry_patterns", (dict,), {}).items()
    )
    for p in patterns:
        if not p.name.startswith("*") or len(p.name) < 2:
            raise DictionaryError(f"{where}.telemetry_patterns.{p.name}: a pattern is '*suffix'")
    for name, table in r.get("events", (dict,), {}).items():
        ewhere = f"{where}.events.{name}"
        er = _Reader(ewhere, table)
        severity = er.get("severity", (str,), required=True)
        if severity not in SEVERITIES:
            raise DictionaryError(f"{ewhere}.severity: {severity!r} is not one of {', '.join(SEVERITIES)}")
        throttle = er.get("throttle", (int,), 0)
        if throttle < 0:
            raise DictionaryError(f"{ewhere}.throttle: must be >= 0")
        dictionary.events[f"{component}.{name}"] = EventDef(component, name, severity,
                                                            er.get("description", (str,), ""), throttle)
        er.finish()
    dictionary.components[component] = ComponentDef(
        component, r.get("description", (str,), ""), commandable, downlink, patterns)
    r.finish()


def load_dictionary(folder: Path | str | None = None) -> Dictionary:
    """Load and validate every ``*.toml`` in folder (default: the packaged dictionary)."""
    if folder is None:
        return default_dictionary()
    return _load(Path(folder))


@lru_cache(maxsize=1)
def default_dictionary() -> Dictionary:
    return _load(Path(str(resources.files("flight") / "dictionary")))


def _load(folder: Path) -> Dictionary:
    if not folder.is_dir():
        raise DictionaryError(f"{folder}: no such dictionary folder")
    dictionary = Dictionary()
    for path in sorted(folder.glob("*.toml")):
        component = path.stem
        if not component.isidentifier() or not component.islower():
            raise DictionaryError(f"{path.name}: a component name is lower_snake_case")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise DictionaryError(f"{path.name}: not valid TOML: {exc}") from None
        _read_component(dictionary, component, path.name, data)
    return dictionary
