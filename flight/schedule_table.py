"""Rate groups as data: a TOML schedule table, validated on load, bound to callables by name.

```toml
base_period_ns = 1_000_000_000     # nominal base tick
[[group]]
name = "frame"
divisor = 1                         # runs every `divisor` base ticks ...
offset = 0                          # ... on ticks where (tick - offset) % divisor == 0
members = ["nav.publish", "power.run"]   # run in this order
```

The table names members; a registry (name -> callable) supplies them, so the same table can be
checked offline and wired in SIL, on a bench or in flight. Like cFS SCH tables and F Prime's
RateGroupDriver divisor table, it is validated once, with errors that name the key and the group.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from flight.rate_group import (
    DEFAULT_SLIP_EVENT_THROTTLE,
    EventCallback,
    RateGroup,
    RateGroupDriver,
    RateGroupSpec,
    TickContext,
)

__all__ = [
    "GroupEntry",
    "ScheduleTable",
    "ScheduleTableError",
    "default_sil_table",
    "load_schedule_table",
    "preset_table_names",
]

_TOP_KEYS = ("base_period_ns", "group")
_GROUP_KEYS = ("name", "divisor", "offset", "members")


class ScheduleTableError(ValueError):
    """A schedule table that does not validate, or that cannot be bound."""


@dataclass(frozen=True)
class GroupEntry:
    """One ``[[group]]`` of the table."""

    name: str
    divisor: int
    offset: int
    members: tuple[str, ...]

    @property
    def spec(self) -> RateGroupSpec:
        return RateGroupSpec(self.name, self.divisor, self.offset)


@dataclass(frozen=True)
class ScheduleTable:
    base_period_ns: int
    groups: tuple[GroupEntry, ...]
    source: str = "<dict>"

    @property
    def major_frame_ticks(self) -> int:
        """Ticks after which the whole pattern repeats: the lcm of the divisors."""
        return math.lcm(*(g.divisor for g in self.groups))

    @property
    def member_names(self) -> list[str]:
        """Every member the table needs, in first-use order."""
        return list(dict.fromkeys(m for g in self.groups for m in g.members))

    def bind(self, registry: Mapping[str, Callable[[TickContext], None]]) -> list[RateGroup]:
        """Build the rate groups, looking every member up by name in ``registry``."""
        missing = [(g.name, m) for g in self.groups for m in g.members if m not in registry]
        if missing:
            listed = ", ".join(f"{member!r} (group {group!r})" for group, member in missing)
            raise ScheduleTableError(
                f"schedule table {self.source}: unknown member(s) {listed}; "
                f"known: {', '.join(sorted(registry)) or 'none'}"
            )
        for name in self.member_names:
            if not callable(registry[name]):
                raise ScheduleTableError(f"schedule table {self.source}: registry entry {name!r} is not callable")
        return [
            RateGroup(g.spec, [registry[m] for m in g.members], member_names=list(g.members))
            for g in self.groups
        ]

    def build_driver(
        self,
        registry: Mapping[str, Callable[[TickContext], None]],
        *,
        base_period_ns: int | None = None,
        exec_timer: Callable[[], int] | None = None,
        on_event: EventCallback | None = None,
        slip_event_throttle: int = DEFAULT_SLIP_EVENT_THROTTLE,
    ) -> RateGroupDriver:
        """Bind and wrap in a driver; ``base_period_ns`` overrides the table's (a simulator's step)."""
        period_ns = self.base_period_ns if base_period_ns is None else base_period_ns
        return RateGroupDriver(
            period_ns, self.bind(registry), exec_timer,
            on_event=on_event, slip_event_throttle=slip_event_throttle,
        )


def preset_table_names() -> list[str]:
    folder = resources.files("flight") / "schedules"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def default_sil_table() -> ScheduleTable:
    """The SIL's table, shipped as ``flight/schedules/sil.toml``."""
    return load_schedule_table("sil")


def load_schedule_table(source: str | Path | dict) -> ScheduleTable:
    """Load and validate a table from a dict (parsed TOML), a ``.toml`` path, or a preset name."""
    if isinstance(source, dict):
        return _parse(source, "<dict>")
    if not isinstance(source, (str, Path)):
        raise TypeError(f"source must be a str, Path or dict, got {type(source).__name__}")
    text, where = _read_source(source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScheduleTableError(f"schedule table {where}: not valid TOML: {exc}") from exc
    return _parse(data, where)


def _read_source(source: str | Path) -> tuple[str, str]:
    path = Path(source)
    if isinstance(source, Path) or path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ScheduleTableError(f"schedule table file not found: {path}")
        return path.read_text(encoding="utf-8"), str(path)
    preset = resources.files("flight") / "schedules" / f"{source}.toml"
    if not preset.is_file():
        raise ScheduleTableError(
            f"unknown schedule table {source!r}: not a file and not a preset "
            f"(presets: {', '.join(preset_table_names())})"
        )
    return preset.read_text(encoding="utf-8"), str(source)


def _is_int(value: Any) -> bool:
    return type(value) is int  # bool is an int subclass; a flag is not a count


def _parse(data: dict[str, Any], source: str) -> ScheduleTable:
    where = f"schedule table {source}"
    for key in data:
        if key not in _TOP_KEYS:
            raise ScheduleTableError(f"{where}: unknown key {key!r} (known: {', '.join(_TOP_KEYS)})")
    if "base_period_ns" not in data:
        raise ScheduleTableError(f"{where}: missing key 'base_period_ns'")
    base_period_ns = data["base_period_ns"]
    if not _is_int(base_period_ns) or base_period_ns < 1:
        raise ScheduleTableError(f"{where}: 'base_period_ns' must be an int >= 1, got {base_period_ns!r}")
    raw_groups = data.get("group")
    if raw_groups is None:
        raise ScheduleTableError(f"{where}: no [[group]] entries")
    if not isinstance(raw_groups, list) or not raw_groups:
        raise ScheduleTableError(f"{where}: 'group' must be a non-empty array of tables ([[group]])")
    groups: list[GroupEntry] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_groups):
        entry = _parse_group(where, index, raw)
        if entry.name in seen:
            raise ScheduleTableError(f"{where}: group {entry.name!r} (group[{index}]): key 'name' is not unique")
        seen.add(entry.name)
        groups.append(entry)
    return ScheduleTable(base_period_ns=base_period_ns, groups=tuple(groups), source=source)


def _parse_group(where: str, index: int, raw: Any) -> GroupEntry:
    if not isinstance(raw, dict):
        raise ScheduleTableError(f"{where}: group[{index}] must be a table, got {type(raw).__name__}")
    name = raw.get("name")
    if type(name) is not str or not name:
        raise ScheduleTableError(f"{where}: group[{index}]: key 'name' must be a non-empty string, got {name!r}")
    at = f"{where}: group {name!r} (group[{index}])"
    for key in raw:
        if key not in _GROUP_KEYS:
            raise ScheduleTableError(f"{at}: unknown key {key!r} (known: {', '.join(_GROUP_KEYS)})")
    if "divisor" not in raw:
        raise ScheduleTableError(f"{at}: missing key 'divisor'")
    divisor = raw["divisor"]
    if not _is_int(divisor) or divisor < 1:
        raise ScheduleTableError(f"{at}: key 'divisor' must be an int >= 1, got {divisor!r}")
    offset = raw.get("offset", 0)
    if not _is_int(offset) or not 0 <= offset < divisor:
        raise ScheduleTableError(f"{at}: key 'offset' must be an int in [0, divisor={divisor}), got {offset!r}")
    if "members" not in raw:
        raise ScheduleTableError(f"{at}: missing key 'members'")
    members = raw["members"]
    if not isinstance(members, list) or not members:
        raise ScheduleTableError(f"{at}: key 'members' must be a non-empty list of names, got {members!r}")
    for member in members:
        if type(member) is not str or not member:
            raise ScheduleTableError(f"{at}: key 'members' must hold non-empty strings, got {member!r}")
    duplicates = sorted({m for m in members if members.count(m) > 1})
    if duplicates:
        raise ScheduleTableError(f"{at}: key 'members' names {', '.join(map(repr, duplicates))} more than once")
    return GroupEntry(name=name, divisor=divisor, offset=offset, members=tuple(members))
