"""Time-triggered rate groups: a base tick divided by {divisor, offset}, members in fixed order.

Anchors: F Prime ``RateGroupDriver`` (divisor/offset table, validated once) and
``ActiveRateGroup`` (max execution time, cycle-slip telemetry, a throttled slip event), cFS SCH
(count every anomaly, skipped slots included; apply table changes only at a major-frame boundary).

Everything runs synchronously in the caller's thread, so a SIL run is deterministic. Execution
time is measured only through an injected timer; without one it reads as 0 (SIL never reads a
real clock). Who calls ``tick`` decides the pacing: the simulator in lockstep, or
``flight.free_running.FreeRunningDriver`` on a monotonic clock; the groups are the same.

The tick index follows scheduler time: base periods that pass without a tick (a gap in ``t_ns``,
or an explicit ``skip_ticks``) are skipped tick indices, so every group keeps its phase and each
group counts the runs it missed.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_SLIP_EVENT_THROTTLE",
    "EventCallback",
    "MemberError",
    "RateGroup",
    "RateGroupDriver",
    "RateGroupSpec",
    "TickContext",
]

_ERRORS_KEPT = 64
# F Prime ACTIVE_RATE_GROUP_OVERRUN_THROTTLE: slip events per group before they are suppressed.
DEFAULT_SLIP_EVENT_THROTTLE = 5

# on_event(severity, name, text): flight.events.EventReporter.emit fits.
EventCallback = Callable[[str, str, str], None]


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

    def runs_between(self, first_tick: int, end_tick: int) -> int:
        """How many ticks in ``[first_tick, end_tick)`` this group runs on (closed form)."""
        if end_tick <= first_tick:
            return 0
        return self._runs_before(end_tick) - self._runs_before(first_tick)

    def _runs_before(self, tick: int) -> int:
        # Ticks t in [0, tick) with t = offset (mod divisor); Python's floor division keeps it
        # right for any int, so the difference above is exact.
        return (tick - self.offset + self.divisor - 1) // self.divisor


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


class _Throttle:
    """Lets ``limit`` events through, then counts the rest until reset (nothing silently lost)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sent = 0  # since the last reset
        self.suppressed = 0  # cumulative

    def admit(self) -> bool:
        if self.sent < self.limit:
            self.sent += 1
            return True
        self.suppressed += 1
        return False

    @property
    def exhausted(self) -> bool:
        return self.sent >= self.limit

    def reset(self) -> None:
        self.sent = 0


class RateGroup:
    """An ordered list of members run together at one rate, with its own accounting.

    ``member_names`` labels the members in telemetry and errors (a schedule table passes its own
    names); by default each member's ``__qualname__``, numbered where two coincide.
    """

    def __init__(
        self,
        spec: RateGroupSpec,
        members: list[Callable[[TickContext], None]],
        member_names: list[str] | None = None,
    ) -> None:
        if not isinstance(spec, RateGroupSpec):
            raise TypeError(f"spec must be a RateGroupSpec, got {type(spec).__name__}")
        for index, member in enumerate(members):
            if not callable(member):
                raise TypeError(f"rate group {spec.name!r}: member {index} is not callable: {member!r}")
        self.spec = spec
        self.members = list(members)
        if member_names is None:
            self.member_names = self._unique_labels(self.members)
        else:
            self.member_names = self._checked_names(spec.name, list(member_names), len(self.members))
        self.member_errors = [0] * len(self.members)  # per member, same order as members
        self.cycles = 0
        self.max_exec_ns = 0
        self.last_exec_ns = 0
        self.cycle_slips = 0
        self.skipped_ticks = 0  # scheduled runs of this group that the driver skipped over
        self._slip_throttle = _Throttle(DEFAULT_SLIP_EVENT_THROTTLE)

    @staticmethod
    def _unique_labels(members: list[Callable]) -> list[str]:
        labels = [_member_label(m) for m in members]
        seen: dict[str, int] = {}
        unique = []
        for label in labels:
            count = seen[label] = seen.get(label, 0) + 1
            unique.append(label if labels.count(label) == 1 else f"{label}#{count}")
        return unique

    @staticmethod
    def _checked_names(group: str, names: list[str], n_members: int) -> list[str]:
        if len(names) != n_members:
            raise ValueError(f"rate group {group!r}: {len(names)} member names for {n_members} members")
        for name in names:
            if type(name) is not str or not name:
                raise ValueError(f"rate group {group!r}: member names must be non-empty str, got {name!r}")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"rate group {group!r}: member name(s) {', '.join(map(repr, duplicates))} appear twice")
        return names

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def member_errors_total(self) -> int:
        return sum(self.member_errors)

    @property
    def slip_events_suppressed(self) -> int:
        """Slip events not emitted because this group's throttle was exhausted (cumulative)."""
        return self._slip_throttle.suppressed

    def telemetry(self) -> dict:
        return {
            "cycles": self.cycles,
            "max_exec_ns": self.max_exec_ns,
            "cycle_slips": self.cycle_slips,
            "skipped_ticks": self.skipped_ticks,
            "slip_events_suppressed": self.slip_events_suppressed,
            "member_errors": self.member_errors_total,
            "member_errors_by_member": dict(zip(self.member_names, self.member_errors)),
        }


class RateGroupDriver:
    """Divides the base tick among rate groups and runs them in table order.

    A member that raises is caught and counted; the other members and groups still run.
    A group whose measured execution exceeds its period counts a cycle slip and emits a
    RATE_GROUP_SLIP WARNING_HI event through ``on_event``, at most ``slip_event_throttle`` per
    group until ``reset_throttle``; the rest are counted as suppressed. A ``tick`` called from
    inside a member (the previous frame has not finished) is refused and counted.

    Table changes (``request_table`` / ``set_groups``) take effect at the first tick where
    ``tick % major_frame_ticks == 0`` (the lcm of the current divisors), so no group runs a
    partial cycle across a switch.
    """

    def __init__(
        self,
        base_period_ns: int,
        groups: list[RateGroup],
        exec_timer: Callable[[], int] | None = None,
        *,
        on_event: EventCallback | None = None,
        slip_event_throttle: int = DEFAULT_SLIP_EVENT_THROTTLE,
    ) -> None:
        if type(base_period_ns) is not int or base_period_ns < 1:
            raise ValueError(f"base_period_ns must be an int >= 1, got {base_period_ns!r}")
        if type(slip_event_throttle) is not int or slip_event_throttle < 0:
            raise ValueError(f"slip_event_throttle must be an int >= 0, got {slip_event_throttle!r}")
        if on_event is not None and not callable(on_event):
            raise TypeError(f"on_event must be callable, got {on_event!r}")
        self.base_period_ns = base_period_ns
        self._exec_timer = exec_timer
        self._on_event = on_event
        self.slip_event_throttle = slip_event_throttle
        self.groups: list[RateGroup] = self._adopt(self._checked_groups(groups))
        self._pending_groups: list[RateGroup] | None = None
        self._running = False
        self._last_t_ns: int | None = None
        self.ticks = 0  # index of the next tick: ticks run plus ticks skipped
        self.ticks_run = 0
        self.refused_ticks = 0  # re-entrant ticks
        self.skipped_ticks = 0  # base periods that passed with no tick run (gaps and skip-aheads)
        self.table_switches = 0
        self.error_count = 0
        self.event_errors = 0  # on_event callbacks that raised (counted, never propagated)
        self._retired_cycle_slips = 0  # slips of groups that left the table, so frame_slips never drops
        self._skip_throttle = _Throttle(slip_event_throttle)
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

    def _adopt(self, groups: list[RateGroup]) -> list[RateGroup]:
        # The throttle limit is the driver's configuration; counts already suppressed are kept.
        for group in groups:
            group._slip_throttle.limit = self.slip_event_throttle
        return groups

    # --- table changes -------------------------------------------------------------------------

    @staticmethod
    def major_frame_of(groups: list[RateGroup]) -> int:
        """Ticks after which every group's run pattern repeats: the lcm of the divisors."""
        return math.lcm(*(group.spec.divisor for group in groups)) if groups else 1

    @property
    def major_frame_ticks(self) -> int:
        return self.major_frame_of(self.groups)

    @property
    def pending_table(self) -> list[RateGroup] | None:
        """Groups waiting for the next major-frame boundary, or None."""
        return None if self._pending_groups is None else list(self._pending_groups)

    def request_table(self, groups: list[RateGroup]) -> None:
        """Replace the table at the first tick where ``tick % major_frame_ticks == 0``.

        A later request before that boundary replaces this one. The new groups' names must be
        unique; groups may be reused from the current table (their counters carry on).
        """
        self._pending_groups = self._adopt(self._checked_groups(groups))

    def set_groups(self, groups: list[RateGroup]) -> None:
        """Replace the table: at once when idle on a major-frame boundary, else at the next one."""
        self.request_table(groups)
        if not self._running and self.ticks % self.major_frame_ticks == 0:
            self._switch_table()

    def _switch_table(self) -> None:
        new = self._pending_groups
        assert new is not None
        kept = {id(group) for group in new}
        self._retired_cycle_slips += sum(g.cycle_slips for g in self.groups if id(g) not in kept)
        old_names = [g.name for g in self.groups]
        self.groups, self._pending_groups = new, None
        self.table_switches += 1
        self._emit(
            "ACTIVITY_HI", "RATE_GROUP_TABLE_SWITCHED",
            f"rate group table switched at tick {self.ticks}: [{', '.join(old_names)}] -> "
            f"[{', '.join(g.name for g in new)}], major frame {self.major_frame_ticks} ticks",
        )

    def _boundary_at_or_after(self, tick: int) -> int:
        frame = self.major_frame_ticks
        return -(-tick // frame) * frame

    # --- counters ----------------------------------------------------------------------------

    @property
    def frame_slips(self) -> int:
        """All slips: group cycle slips (current and retired groups) plus refused (re-entrant) ticks."""
        return sum(group.cycle_slips for group in self.groups) + self._retired_cycle_slips + self.refused_ticks

    @property
    def exec_timer(self) -> Callable[[], int] | None:
        """The injected execution timer (ns), or None: then execution time reads as 0."""
        return self._exec_timer

    @exec_timer.setter
    def exec_timer(self, timer: Callable[[], int] | None) -> None:
        if timer is not None and not callable(timer):
            raise TypeError(f"exec_timer must be callable, got {timer!r}")
        self._exec_timer = timer

    @property
    def last_tick_t_ns(self) -> int | None:
        """Scheduler time of the last tick run (moved on by skipped ticks), or None before the first."""
        return self._last_t_ns

    @property
    def skip_events_suppressed(self) -> int:
        return self._skip_throttle.suppressed

    @property
    def errors(self) -> list[MemberError]:
        """The most recent member failures, oldest first (bounded)."""
        return list(self._errors)

    def reset_throttle(self, group: str | None = None) -> None:
        """Let slip (and skip) events through again: one group by name, or all when None.

        Suppressed counts are cumulative and are not reset.
        """
        if group is None:
            for g in self.groups:
                g._slip_throttle.reset()
            self._skip_throttle.reset()
            return
        for g in self.groups:
            if g.name == group:
                g._slip_throttle.reset()
                return
        raise KeyError(f"no rate group {group!r} (groups: {', '.join(g.name for g in self.groups)})")

    # --- running -----------------------------------------------------------------------------

    def tick(self, t_ns: int) -> None:
        """Run one base tick at scheduler time ``t_ns``.

        Whole base periods between the previous tick and this one are skipped ticks (counted,
        with each group's missed runs), and the tick index moves past them.
        """
        if self._running:
            self.refused_ticks += 1
            return
        if type(t_ns) is not int:
            raise TypeError(f"t_ns must be an int, got {type(t_ns).__name__}")
        if self._last_t_ns is not None:
            if t_ns < self._last_t_ns:
                raise ValueError(f"t_ns went backwards: {t_ns} after {self._last_t_ns}")
            missed = max(0, (t_ns - self._last_t_ns) // self.base_period_ns - 1)
            if missed:
                self._skip(missed, reason="gap in tick times")
        self._last_t_ns = t_ns
        tick = self.ticks
        if self._pending_groups is not None and tick % self.major_frame_ticks == 0:
            self._switch_table()
        self._running = True
        # Groups of one period share the tick's context (frozen, so sharing is safe): one built a tick.
        contexts: dict[int, TickContext] = {}
        try:
            for group in self.groups:
                if group.spec.runs_on(tick):
                    self._run_group(group, tick, t_ns, contexts)
        finally:
            self._running = False
        self.ticks = tick + 1
        self.ticks_run += 1

    def skip_ticks(self, n_ticks: int) -> dict[str, int]:
        """Skip the next ``n_ticks`` tick indices without running them (a scheduler skip-ahead).

        Counts them in ``skipped_ticks`` and, per group, the runs that fell on them; a pending
        table switches at a boundary inside the skipped span. Returns the missed runs per group.
        """
        if type(n_ticks) is not int or n_ticks < 0:
            raise ValueError(f"n_ticks must be an int >= 0, got {n_ticks!r}")
        if self._running:
            raise RuntimeError("skip_ticks called from inside a tick")
        missed = self._skip(n_ticks, reason="skip-ahead") if n_ticks else {}
        if self._last_t_ns is not None:
            self._last_t_ns += n_ticks * self.base_period_ns
        return missed

    def _skip(self, n_ticks: int, reason: str) -> dict[str, int]:
        first, end = self.ticks, self.ticks + n_ticks
        missed: dict[str, int] = {}
        start = first
        if self._pending_groups is not None:
            boundary = self._boundary_at_or_after(first)
            if boundary < end:
                self._count_skipped(start, boundary, missed)
                self.ticks = start = boundary
                self._switch_table()
        self._count_skipped(start, end, missed)
        self.ticks = end
        self.skipped_ticks += n_ticks
        if self._skip_throttle.admit():
            runs = ", ".join(f"{name} {count}" for name, count in missed.items())
            self._emit(
                "WARNING_HI", "RATE_GROUP_TICKS_SKIPPED",
                f"skipped {n_ticks} base ticks [{first}, {end}) ({reason}); missed runs: {runs or 'none'}"
                + self._throttle_note(self._skip_throttle, "skip"),
            )
        return missed

    def _count_skipped(self, first: int, end: int, missed: dict[str, int]) -> None:
        for group in self.groups:
            runs = group.spec.runs_between(first, end)
            group.skipped_ticks += runs
            missed[group.name] = missed.get(group.name, 0) + runs

    def _run_group(self, group: RateGroup, tick: int, t_ns: int, contexts: dict[int, TickContext]) -> None:
        period_ns = self.base_period_ns * group.spec.divisor
        context = contexts.get(period_ns)
        if context is None:
            context = contexts[period_ns] = TickContext(tick, t_ns, period_ns)
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
            if group._slip_throttle.admit():
                self._emit(
                    "WARNING_HI", "RATE_GROUP_SLIP",
                    f"rate group {group.name} slipped at tick {tick}: executed {exec_ns} ns, "
                    f"period {period_ns} ns" + self._throttle_note(group._slip_throttle, "slip"),
                )

    @staticmethod
    def _throttle_note(throttle: _Throttle, kind: str) -> str:
        return f" (throttle reached: further {kind} events suppressed and counted)" if throttle.exhausted else ""

    def _emit(self, severity: str, name: str, text: str) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(severity, name, text)
        except Exception:  # a broken event path must not stop the schedule; it is counted
            self.event_errors += 1

    # --- telemetry ---------------------------------------------------------------------------

    def telemetry(self) -> dict:
        """Per group name: cycles, max_exec_ns, cycle_slips, skipped_ticks,
        slip_events_suppressed, member_errors (+ per member)."""
        return {group.name: group.telemetry() for group in self.groups}

    def counters(self) -> dict:
        """Driver-wide counters (the per-group ones are in ``telemetry``)."""
        return {
            "ticks": self.ticks,
            "ticks_run": self.ticks_run,
            "skipped_ticks": self.skipped_ticks,
            "refused_ticks": self.refused_ticks,
            "frame_slips": self.frame_slips,
            "member_errors": self.error_count,
            "event_errors": self.event_errors,
            "skip_events_suppressed": self.skip_events_suppressed,
            "table_switches": self.table_switches,
            "major_frame_ticks": self.major_frame_ticks,
            "table_pending": self._pending_groups is not None,
        }
