"""Time-triggered rate groups: a base tick divided by {divisor, offset}, members in fixed order.

Anchors: F Prime ``RateGroupDriver`` (divisor/offset table, validated once) and
``ActiveRateGroup`` (max execution time and cycle-slip telemetry), cFS SCH (count every anomaly,
apply table changes only at a frame boundary).

Everything runs synchronously in the caller's thread, so a SIL run is deterministic. Execution
time is measured only through an injected timer; without one it reads as 0 (SIL never reads a
real clock).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MemberError", "RateGroup", "RateGroupDriver", "RateGroupSpec", "TickContext"]

_ERRORS_KEPT = 64


@dataclass(frozen=True)
class RateGroupSpec:
    """A group runs on ticks where ``(tick - offset) % divisor == 0``."""

    name: str
    divisor: int
    offset: int = 0

    def __post_init__(self) -> None:
        if type(self.name) is not str or not self.name:
            raise ValueError(f"RateGroupSpec.name must be a non-empty str, got {self.name!r}")
        if type(self.divisor) is not int or self.divisor < 1:
            raise ValueError(f"RateGroupSpec.divisor must be an int >= 1, got {self.divisor!r} (group {self.name!r})")
        if type(self.offset) is not int or not 0 <= self.offset < self.divisor:
            raise ValueError(
                f"RateGroupSpec.offset must be an int in [0, divisor={self.divisor}), "
                f"got {self.offset!r} (group {self.name!r})"
            )

    def runs_on(self, tick: int) -> bool:
        return (tick - self.offset) % self.divisor == 0


@dataclass(frozen=True)
class TickContext:
    """What a member is told each time it runs."""

    tick: int  # base ticks since the driver started
    t_ns: int  # scheduler time of this tick
    period_ns: int  # period of the member's group


@dataclass(frozen=True)
class MemberError:
    """One caught member failure, kept in the driver's bounded error list."""

    tick: int
    t_ns: int
    group: str
    member: str
    error: str


def _member_label(member: Callable) -> str:
    return getattr(member, "__qualname__", None) or type(member).__name__


class RateGroup:
    """An ordered list of members run together at one rate, with its own accounting."""

    def __init__(self, spec: RateGroupSpec, members: list[Callable[[TickContext], None]]) -> None:
        if not isinstance(spec, RateGroupSpec):
            raise TypeError(f"spec must be a RateGroupSpec, got {type(spec).__name__}")
        for index, member in enumerate(members):
            if not callable(member):
                raise TypeError(f"rate group {spec.name!r}: member {index} is not callable: {member!r}")
        self.spec = spec
        self.members = list(members)
        self.member_names = self._unique_labels(self.members)
        self.member_errors = [0] * len(self.members)  # per member, same order as members
        self.cycles = 0
        self.max_exec_ns = 0
        self.last_exec_ns = 0
        self.cycle_slips = 0

    @staticmethod
    def _unique_labels(members: list[Callable]) -> list[str]:
        labels = [_member_label(m) for m in members]
        seen: dict[str, int] = {}
        unique = []
        for label in labels:
            count = seen[label] = seen.get(label, 0) + 1
            unique.append(label if labels.count(label) == 1 else f"{label}#{count}")
        return unique

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def member_errors_total(self) -> int:
        return sum(self.member_errors)

    def telemetry(self) -> dict:
        return {
            "cycles": self.cycles,
            "max_exec_ns": self.max_exec_ns,
            "cycle_slips": self.cycle_slips,
            "member_errors": self.member_errors_total,
            "member_errors_by_member": dict(zip(self.member_names, self.member_errors)),
        }


class RateGroupDriver:
    """Divides the base tick among rate groups and runs them in table order.

    A member that raises is caught and counted; the other members and groups still run.
    A group whose measured execution exceeds its period counts a cycle slip. A ``tick`` called
    from inside a member (the previous frame has not finished) is refused and counted.
    """

    def __init__(
        self,
        base_period_ns: int,
        groups: list[RateGroup],
        exec_timer: Callable[[], int] | None = None,
    ) -> None:
        if type(base_period_ns) is not int or base_period_ns < 1:
            raise ValueError(f"base_period_ns must be an int >= 1, got {base_period_ns!r}")
        self.base_period_ns = base_period_ns
        self._exec_timer = exec_timer
        self.groups: list[RateGroup] = self._checked_groups(groups)
        self._pending_groups: list[RateGroup] | None = None
        self._running = False
        self._last_t_ns: int | None = None
        self.ticks = 0  # ticks run; also the index of the next tick
        self.refused_ticks = 0  # re-entrant ticks
        self.skipped_ticks = 0  # base periods that passed with no tick call (bench pacing)
        self.error_count = 0
        self._errors: deque[MemberError] = deque(maxlen=_ERRORS_KEPT)

    @staticmethod
    def _checked_groups(groups: list[RateGroup]) -> list[RateGroup]:
        names = set()
        for group in groups:
            if not isinstance(group, RateGroup):
                raise TypeError(f"groups must be RateGroup objects, got {type(group).__name__}")
            if group.name in names:
                raise ValueError(f"rate group name {group.name!r} appears twice in the table")
            names.add(group.name)
        return list(groups)

    def set_groups(self, groups: list[RateGroup]) -> None:
        """Replace the table; from inside a tick the change waits for the next frame boundary."""
        checked = self._checked_groups(groups)
        if self._running:
            self._pending_groups = checked
        else:
            self.groups = checked

    @property
    def frame_slips(self) -> int:
        """All slips: group cycle slips plus refused (re-entrant) ticks."""
        return sum(group.cycle_slips for group in self.groups) + self.refused_ticks

    @property
    def errors(self) -> list[MemberError]:
        """The most recent member failures, oldest first (bounded)."""
        return list(self._errors)

    def tick(self, t_ns: int) -> None:
        """Run one base tick at scheduler time ``t_ns``."""
        if self._running:
            self.refused_ticks += 1
            return
        if type(t_ns) is not int:
            raise TypeError(f"t_ns must be an int, got {type(t_ns).__name__}")
        if self._last_t_ns is not None:
            if t_ns < self._last_t_ns:
                raise ValueError(f"t_ns went backwards: {t_ns} after {self._last_t_ns}")
            self.skipped_ticks += max(0, (t_ns - self._last_t_ns) // self.base_period_ns - 1)
        self._last_t_ns = t_ns
        if self._pending_groups is not None:
            self.groups, self._pending_groups = self._pending_groups, None
        tick = self.ticks
        self._running = True
        try:
            for group in self.groups:
                if group.spec.runs_on(tick):
                    self._run_group(group, tick, t_ns)
        finally:
            self._running = False
        self.ticks = tick + 1

    def _run_group(self, group: RateGroup, tick: int, t_ns: int) -> None:
        period_ns = self.base_period_ns * group.spec.divisor
        context = TickContext(tick=tick, t_ns=t_ns, period_ns=period_ns)
        timer = self._exec_timer
        start_ns = timer() if timer is not None else 0
        for index, member in enumerate(group.members):
            try:
                member(context)
            except Exception as exc:  # flight software keeps running; the error is counted
                group.member_errors[index] += 1
                self.error_count += 1
                self._errors.append(
                    MemberError(tick, t_ns, group.name, group.member_names[index], f"{type(exc).__name__}: {exc}")
                )
        exec_ns = timer() - start_ns if timer is not None else 0
        group.cycles += 1
        group.last_exec_ns = exec_ns
        if exec_ns > group.max_exec_ns:
            group.max_exec_ns = exec_ns
        if exec_ns > period_ns:
            group.cycle_slips += 1

    def telemetry(self) -> dict:
        """Per group name: cycles, max_exec_ns, cycle_slips, member_errors (+ per member)."""
        return {group.name: group.telemetry() for group in self.groups}
