"""Clocks: scheduler time (monotonic integer ns since mission start) and mission UTC.

Scheduler time ``now_ns`` only moves forward and is what rate groups and bus timestamps use.
Mission UTC is ``epoch_utc + now_ns`` and is correctable (``correct_utc``) without touching
scheduler time, as cFE TIME keeps MET apart from its correction factor.

Two implementations:
- ``SteppedClock``: the simulator is the time master (SIL lockstep); never reads a real clock.
- ``MonotonicClock``: ``time.monotonic_ns`` for benches; the only real clock flight code reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Protocol, runtime_checkable

__all__ = [
    "DEFAULT_EPOCH_UTC",
    "Clock",
    "MonotonicClock",
    "SteppedClock",
    "iso_utc",
    "parse_iso_utc",
    "utc_from_epoch",
]

NS_PER_S = 1_000_000_000
_NS_PER_US = 1_000

# Used only when a caller gives no epoch; scenarios set their own.
DEFAULT_EPOCH_UTC = datetime(2026, 1, 1, tzinfo=timezone.utc)


@runtime_checkable
class Clock(Protocol):
    """What flight code may ask of time."""

    epoch_utc: datetime

    def now_ns(self) -> int:
        """Scheduler / mission elapsed time in ns; never decreases."""
        ...

    def utc_at(self, t_ns: int) -> datetime:
        """Mission UTC at elapsed time ``t_ns``."""
        ...


def _checked_epoch(epoch_utc: object) -> datetime:
    if not isinstance(epoch_utc, datetime):
        raise TypeError(f"epoch_utc must be a datetime, got {type(epoch_utc).__name__}")
    if epoch_utc.tzinfo is None or epoch_utc.utcoffset() is None:
        raise ValueError(f"epoch_utc must be timezone-aware (UTC), got naive {epoch_utc.isoformat()}")
    return epoch_utc.astimezone(timezone.utc)


def _checked_ns(label: str, value: object) -> int:
    if type(value) is not int:
        raise TypeError(f"{label} must be an int number of ns, got {type(value).__name__}")
    return value


def utc_from_epoch(epoch_utc: datetime, t_ns: int) -> datetime:
    """``epoch_utc + t_ns``, floored to the microsecond (datetime's resolution), exact in ints."""
    return epoch_utc + timedelta(microseconds=_checked_ns("t_ns", t_ns) // _NS_PER_US)


class _MissionTime:
    """Shared UTC mapping: epoch plus elapsed ns, with a correction that only moves UTC."""

    epoch_utc: datetime

    def utc_at(self, t_ns: int) -> datetime:
        return utc_from_epoch(self.epoch_utc, t_ns)

    def utc_now(self) -> datetime:
        return self.utc_at(self.now_ns())  # type: ignore[attr-defined]

    def correct_utc(self, delta_ns: int) -> None:
        """Shift mission UTC by ``delta_ns`` (a time correction); scheduler time is unchanged."""
        self.epoch_utc = utc_from_epoch(self.epoch_utc, _checked_ns("delta_ns", delta_ns))


class SteppedClock(_MissionTime):
    """Time that moves only when told to: the simulator advances it in lockstep."""

    def __init__(self, epoch_utc: datetime = DEFAULT_EPOCH_UTC, start_ns: int = 0) -> None:
        self.epoch_utc = _checked_epoch(epoch_utc)
        if _checked_ns("start_ns", start_ns) < 0:
            raise ValueError(f"start_ns must be >= 0, got {start_ns}")
        self._now_ns = start_ns

    def now_ns(self) -> int:
        return self._now_ns

    def advance(self, dt_ns: int) -> int:
        """Move time forward by ``dt_ns`` (>= 0); returns the new time."""
        if _checked_ns("dt_ns", dt_ns) < 0:
            raise ValueError(f"dt_ns must be >= 0 (time never goes back), got {dt_ns}")
        self._now_ns += dt_ns
        return self._now_ns

    def advance_to(self, t_ns: int) -> int:
        """Move time forward to ``t_ns`` (>= now)."""
        if _checked_ns("t_ns", t_ns) < self._now_ns:
            raise ValueError(f"t_ns {t_ns} is before now ({self._now_ns}); time never goes back")
        self._now_ns = t_ns
        return t_ns

    def __repr__(self) -> str:
        return f"SteppedClock(epoch_utc={iso_utc(self.epoch_utc)}, now_ns={self._now_ns})"


class MonotonicClock(_MissionTime):
    """Real elapsed time from ``time.monotonic_ns``, zero at construction (bench/HIL).

    ``monotonic_ns`` and ``sleep_s`` are injectable so the pacing logic can be tested without
    real time.
    """

    def __init__(
        self,
        epoch_utc: datetime = DEFAULT_EPOCH_UTC,
        *,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        sleep_s: Callable[[float], None] = time.sleep,
    ) -> None:
        self.epoch_utc = _checked_epoch(epoch_utc)
        self._monotonic_ns = monotonic_ns
        self._sleep_s = sleep_s
        self._origin_ns = monotonic_ns()

    def now_ns(self) -> int:
        return self._monotonic_ns() - self._origin_ns

    def sleep_until(self, t_ns: int) -> int:
        """Sleep until ``now_ns() >= t_ns``; return the lateness in ns (0 if on time or early).

        Never sleeps over a missed deadline: when already past ``t_ns`` it returns at once and
        the caller counts the lateness.
        """
        _checked_ns("t_ns", t_ns)
        while True:
            remaining_ns = t_ns - self.now_ns()
            if remaining_ns <= 0:
                return -remaining_ns
            self._sleep_s(remaining_ns / NS_PER_S)


def iso_utc(dt: datetime, timespec: str = "auto") -> str:
    """ISO 8601 in UTC ending in "Z", e.g. ``2026-01-01T00:00:01.500000Z``."""
    text = _checked_epoch(dt).replace(tzinfo=None).isoformat(timespec=timespec)
    return text + "Z"


def parse_iso_utc(text: str) -> datetime:
    """Inverse of ``iso_utc``: accepts a trailing "Z" or an explicit offset; naive is rejected."""
    value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    return _checked_epoch(value)
