"""Clocks: stepped arithmetic, UTC mapping, ISO formatting, bench pacing with fake time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flight.clock import (
    DEFAULT_EPOCH_UTC,
    Clock,
    MonotonicClock,
    SteppedClock,
    iso_utc,
    parse_iso_utc,
)

EPOCH = datetime(2025, 11, 2, 15, 26, 0, tzinfo=timezone.utc)


def test_stepped_clock_arithmetic():
    clock = SteppedClock(EPOCH)
    assert clock.now_ns() == 0
    assert clock.advance(250_000_000) == 250_000_000
    clock.advance(0)
    clock.advance(750_000_000)
    assert clock.now_ns() == 1_000_000_000
    assert clock.advance_to(5_000_000_000) == 5_000_000_000
    with pytest.raises(ValueError, match="dt_ns"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="before now"):
        clock.advance_to(4_999_999_999)
    with pytest.raises(TypeError, match="dt_ns"):
        clock.advance(0.5)
    assert clock.now_ns() == 5_000_000_000


@given(st.lists(st.integers(0, 10**12), max_size=50))
def test_stepped_clock_sums_steps_exactly(steps):
    clock = SteppedClock(EPOCH, start_ns=7)
    for step in steps:
        clock.advance(step)
    assert clock.now_ns() == 7 + sum(steps)


def test_utc_at_and_correction():
    clock = SteppedClock(EPOCH)
    assert clock.utc_at(0) == EPOCH
    # 91 min 30.123456789 s: floored to the microsecond.
    t_ns = (91 * 60 + 30) * 10**9 + 123_456_789
    assert clock.utc_at(t_ns) == datetime(2025, 11, 2, 16, 57, 30, 123456, tzinfo=timezone.utc)
    clock.advance(t_ns)
    assert clock.utc_now() == clock.utc_at(t_ns)
    clock.correct_utc(-2_000_000)  # UTC moves 2 ms back; scheduler time does not
    assert clock.now_ns() == t_ns
    assert clock.utc_at(t_ns) == datetime(2025, 11, 2, 16, 57, 30, 121456, tzinfo=timezone.utc)


def test_epoch_must_be_aware_and_is_normalised_to_utc():
    with pytest.raises(ValueError, match="epoch_utc"):
        SteppedClock(datetime(2026, 1, 1))
    plus_two = timezone(timedelta(hours=2))
    clock = SteppedClock(datetime(2026, 1, 1, 2, 0, tzinfo=plus_two))
    assert clock.epoch_utc == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert clock.epoch_utc.tzinfo is timezone.utc
    assert SteppedClock().epoch_utc == DEFAULT_EPOCH_UTC


def test_clocks_satisfy_the_protocol():
    assert isinstance(SteppedClock(), Clock)
    assert isinstance(MonotonicClock(), Clock)


def test_iso_utc():
    assert iso_utc(datetime(2026, 3, 20, 14, 1, 2, tzinfo=timezone.utc)) == "2026-03-20T14:01:02Z"
    assert iso_utc(datetime(2026, 3, 20, 14, 1, 2, 500000, tzinfo=timezone.utc)) == "2026-03-20T14:01:02.500000Z"
    assert iso_utc(EPOCH, timespec="milliseconds") == "2025-11-02T15:26:00.000Z"
    minus_five = timezone(timedelta(hours=-5))
    assert iso_utc(datetime(2026, 3, 20, 9, 0, tzinfo=minus_five)) == "2026-03-20T14:00:00Z"
    with pytest.raises(ValueError):
        iso_utc(datetime(2026, 3, 20))


@given(st.datetimes(timezones=st.just(timezone.utc)))
def test_iso_round_trip(dt):
    text = iso_utc(dt)
    assert text.endswith("Z") and "+" not in text
    assert parse_iso_utc(text) == dt


class FakeTime:
    """Monotonic ns that moves only when 'slept', plus optional oversleep per call."""

    def __init__(self, start_ns: int, oversleep_ns: int = 0) -> None:
        self.t_ns = start_ns
        self.oversleep_ns = oversleep_ns
        self.sleeps: list[float] = []

    def monotonic_ns(self) -> int:
        return self.t_ns

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t_ns += round(seconds * 1e9) + self.oversleep_ns


def test_monotonic_clock_counts_from_construction_and_paces():
    fake = FakeTime(start_ns=123_456_789_000)
    clock = MonotonicClock(EPOCH, monotonic_ns=fake.monotonic_ns, sleep_s=fake.sleep)
    assert clock.now_ns() == 0
    assert clock.sleep_until(10_000_000) == 0
    assert clock.now_ns() == 10_000_000 and fake.sleeps == [0.01]
    # Already late: returns the lateness at once and does not sleep.
    fake.t_ns += 25_000_000
    assert clock.sleep_until(20_000_000) == 15_000_000
    assert len(fake.sleeps) == 1


def test_monotonic_clock_reports_oversleep():
    fake = FakeTime(start_ns=0, oversleep_ns=300_000)
    clock = MonotonicClock(EPOCH, monotonic_ns=fake.monotonic_ns, sleep_s=fake.sleep)
    assert clock.sleep_until(1_000_000) == 300_000


def test_real_monotonic_clock_never_goes_back():
    clock = MonotonicClock()
    readings = [clock.now_ns() for _ in range(1000)]
    assert readings == sorted(readings) and readings[0] >= 0
    assert clock.sleep_until(clock.now_ns()) >= 0
