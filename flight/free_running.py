"""Free-running drive: the rate groups paced by a clock instead of the simulator (bench, HIL, flight).

Same ``RateGroupDriver`` and groups as lockstep SIL; only who calls ``tick`` changes. The pacing
and its accounting follow cFS SCH (``SCH_ProcessScheduleTable``):

- tick ``k`` is due at ``origin + k * base_period_ns``; the driver is ticked with that due time,
  so members see the scheduled time, not the jitter;
- a wakeup is one return from ``clock.sleep_until``. When on schedule we sleep until the next due
  tick; when behind we sleep until the next base-period boundary (the next "timer interrupt"), so
  catching up never takes more than ``max_catch_up_ticks`` ticks per base period
  (SCH_MAX_SLOTS_PER_WAKEUP);
- at a wakeup, ``lag`` is the number of due ticks beyond the current one. Up to
  ``max_lag_ticks`` (SCH_MAX_LAG_COUNT) they are caught up, at most ``max_catch_up_ticks`` per
  wakeup (``multiple_ticks_per_wakeup`` counts such wakeups, like MultipleSlotsCount). Beyond it,
  the lagging ticks are skipped and only the current one runs: ``driver.skip_ticks`` counts
  them, with each group's missed runs (SkippedSlotsCount); nothing is silently slept over;
- a tick that starts more than ``late_tolerance_ns`` after its due time is a late tick.

The only time source is the injected clock (``now_ns()`` and ``sleep_until(t_ns) -> lateness_ns``;
``flight.clock.MonotonicClock`` fits). If the driver has no execution timer, ``clock.now_ns`` is
installed so slips are measured on the same clock.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from flight.rate_group import RateGroupDriver

__all__ = ["FreeRunningDriver", "PacingClock"]


@runtime_checkable
class PacingClock(Protocol):
    def now_ns(self) -> int:
        """Monotonic ns; never decreases."""
        ...

    def sleep_until(self, t_ns: int) -> int:
        """Return once ``now_ns() >= t_ns``, at once if already past; returns the lateness in ns."""
        ...


class FreeRunningDriver:
    def __init__(
        self,
        driver: RateGroupDriver,
        clock: PacingClock,
        *,
        max_catch_up_ticks: int = 5,
        max_lag_ticks: int = 50,
        late_tolerance_ns: int = 0,
    ) -> None:
        if not isinstance(driver, RateGroupDriver):
            raise TypeError(f"driver must be a RateGroupDriver, got {type(driver).__name__}")
        if not callable(getattr(clock, "now_ns", None)) or not callable(getattr(clock, "sleep_until", None)):
            raise TypeError("clock must have now_ns() and sleep_until(t_ns)")
        for label, value, low in (
            ("max_catch_up_ticks", max_catch_up_ticks, 1),
            ("max_lag_ticks", max_lag_ticks, 0),
            ("late_tolerance_ns", late_tolerance_ns, 0),
        ):
            if type(value) is not int or value < low:
                raise ValueError(f"{label} must be an int >= {low}, got {value!r}")
        self.driver = driver
        self.clock = clock
        self.max_catch_up_ticks = max_catch_up_ticks
        self.max_lag_ticks = max_lag_ticks
        self.late_tolerance_ns = late_tolerance_ns
        if driver.exec_timer is None:
            driver.exec_timer = clock.now_ns
        self._next_due_ns: int | None = None
        self._stop_requested = False
        self.wakeups = 0
        self.early_wakeups = 0  # sleep_until returned before the due time (a clock fault); counted
        self.ticks_run = 0
        self.late_ticks = 0
        self.max_lateness_ns = 0
        self.multiple_ticks_per_wakeup = 0  # wakeups that ran more than one tick (catch-up)
        self.skip_aheads = 0  # wakeups where the lag exceeded max_lag_ticks
        self.skipped_ticks = 0  # ticks skipped by those skip-aheads
        self.max_lag_ticks_seen = 0

    @property
    def next_due_ns(self) -> int | None:
        """Due time of the next tick on the clock, or None before the first ``run``."""
        return self._next_due_ns

    def stop(self) -> None:
        """Make ``run`` return after the tick in progress (callable from a member)."""
        self._stop_requested = True

    def run(self, n_ticks: int | None = None, until_ns: int | None = None) -> int:
        """Drive the groups until ``n_ticks`` ticks have run, the next tick is due at or after
        ``until_ns``, or ``stop()`` is called; returns the ticks run. Skipped ticks do not count
        toward ``n_ticks``. A later call resumes the same schedule (its lag included).
        """
        if n_ticks is not None and (type(n_ticks) is not int or n_ticks < 0):
            raise ValueError(f"n_ticks must be an int >= 0 or None, got {n_ticks!r}")
        if until_ns is not None and type(until_ns) is not int:
            raise ValueError(f"until_ns must be an int or None, got {until_ns!r}")
        period_ns = self.driver.base_period_ns
        if self._next_due_ns is None:
            last = self.driver.last_tick_t_ns
            # Continue the driver's own grid if it has ticked before; else start now.
            self._next_due_ns = self.clock.now_ns() if last is None else last + period_ns
        self._stop_requested = False
        ran = 0
        while not self._stop_requested:
            budget = self._ticks_allowed(n_ticks, ran, until_ns, period_ns)
            if budget <= 0:
                break
            now_ns = self.clock.now_ns()
            due_ns = self._next_due_ns
            if due_ns >= now_ns:
                wake_ns = due_ns
            else:  # behind: the next wakeup is the next base-period boundary, as SCH's timer
                wake_ns = due_ns + ((now_ns - due_ns) // period_ns + 1) * period_ns
            self.clock.sleep_until(wake_ns)
            ran += self._wakeup(n_ticks, ran, until_ns, period_ns)
        return ran

    def _ticks_allowed(self, n_ticks: int | None, ran: int, until_ns: int | None, period_ns: int) -> int:
        allowed = self.max_catch_up_ticks
        if n_ticks is not None:
            allowed = min(allowed, n_ticks - ran)
        if until_ns is not None:
            allowed = min(allowed, -(-(until_ns - self._next_due_ns) // period_ns))  # due before until_ns
        return allowed

    def _wakeup(self, n_ticks: int | None, ran: int, until_ns: int | None, period_ns: int) -> int:
        self.wakeups += 1
        now_ns = self.clock.now_ns()
        if now_ns < self._next_due_ns:
            self.early_wakeups += 1
            return 0
        due_count = (now_ns - self._next_due_ns) // period_ns + 1
        lag_ticks = due_count - 1
        self.max_lag_ticks_seen = max(self.max_lag_ticks_seen, lag_ticks)
        if lag_ticks > self.max_lag_ticks:
            # SCH_MAX_LAG_COUNT: too far behind to catch up; skip to the current tick, counted.
            self.driver.skip_ticks(lag_ticks)
            self._next_due_ns += lag_ticks * period_ns
            self.skip_aheads += 1
            self.skipped_ticks += lag_ticks
            due_count = 1
        to_run = min(due_count, self._ticks_allowed(n_ticks, ran, until_ns, period_ns))
        done = 0
        while done < to_run and not self._stop_requested:
            self._run_one()
            done += 1
        if done > 1:
            self.multiple_ticks_per_wakeup += 1
        return done

    def _run_one(self) -> None:
        due_ns = self._next_due_ns
        lateness_ns = self.clock.now_ns() - due_ns
        if lateness_ns > self.late_tolerance_ns:
            self.late_ticks += 1
        self.max_lateness_ns = max(self.max_lateness_ns, lateness_ns)
        self.driver.tick(due_ns)
        self._next_due_ns = due_ns + self.driver.base_period_ns
        self.ticks_run += 1

    def telemetry(self) -> dict:
        """Pacing counters (the groups' own counters are in ``driver.telemetry()``)."""
        return {
            "wakeups": self.wakeups,
            "early_wakeups": self.early_wakeups,
            "ticks_run": self.ticks_run,
            "late_ticks": self.late_ticks,
            "max_lateness_ns": self.max_lateness_ns,
            "multiple_ticks_per_wakeup": self.multiple_ticks_per_wakeup,
            "skip_aheads": self.skip_aheads,
            "skipped_ticks": self.skipped_ticks,
            "max_lag_ticks_seen": self.max_lag_ticks_seen,
        }
