"""Orbit propagation with SGP4: from mean elements or a TLE to TEME position and velocity.

Time convention: the propagator's `epoch_utc` is sim time zero and `t_s` counts elapsed SI
seconds from it. SGP4's own clock is minutes since its element epoch, so
tsince = (epoch_utc - satrec epoch) + t_s, the first term taken as a UTC difference as SGP4 and
skyfield do (a leap second between the two epochs would be ignored; none is scheduled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
from sgp4.api import SGP4_ERRORS, WGS72, Satrec
from sgp4.earth_gravity import wgs72 as _WGS72

from sim.constants import MU_EARTH_KM3_S2, R_EARTH_EQUATORIAL_KM, SECONDS_PER_DAY

# Day zero of SGP4's epoch argument: 1949 December 31 00:00 UT (JD 2433281.5).
_SGP4_EPOCH0 = datetime(1949, 12, 31, tzinfo=timezone.utc)
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_UNIX_EPOCH_JD = 2440587.5


class PropagationError(RuntimeError):
    """SGP4 could not propagate (decayed orbit, eccentricity out of range, ...)."""


def require_utc(when: datetime, name: str = "epoch_utc") -> None:
    if not isinstance(when, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(when).__name__}")
    if when.tzinfo is None or when.utcoffset() != timedelta(0):
        raise ValueError(f"{name} must be timezone-aware UTC, got {when!r}")


def utc_julian_date(when: datetime) -> tuple[float, float]:
    """(whole, fraction) Julian date of a UTC datetime, split so no precision is lost."""
    require_utc(when)
    delta = when - _UNIX_EPOCH
    whole = _UNIX_EPOCH_JD + delta.days  # ends in .5: midnight
    fraction = (delta.seconds + delta.microseconds * 1e-6) / SECONDS_PER_DAY
    return whole, fraction


def orbital_period_s(semi_major_axis_km: float) -> float:
    """Kepler's third law, T = 2*pi*sqrt(a^3/mu)."""
    return 2.0 * math.pi * math.sqrt(semi_major_axis_km**3 / MU_EARTH_KM3_S2)


@dataclass(frozen=True)
class OrbitElements:
    """Mean elements for SGP4. altitude_km is the mean semi-major axis minus R_EARTH_EQUATORIAL_KM."""

    altitude_km: float
    inclination_deg: float
    raan_deg: float
    epoch_utc: datetime
    eccentricity: float = 0.0
    arg_perigee_deg: float = 0.0
    mean_anomaly_deg: float = 0.0
    bstar_per_earth_radius: float = 0.0

    def __post_init__(self) -> None:
        require_utc(self.epoch_utc, "OrbitElements.epoch_utc")
        if not 0.0 <= self.eccentricity < 1.0:
            raise ValueError(f"OrbitElements.eccentricity must be in [0, 1), got {self.eccentricity}")
        if not 0.0 <= self.inclination_deg <= 180.0:
            raise ValueError(f"OrbitElements.inclination_deg must be in [0, 180], got {self.inclination_deg}")
        perigee_km = self.semi_major_axis_km * (1.0 - self.eccentricity)
        if perigee_km <= R_EARTH_EQUATORIAL_KM:
            raise ValueError(
                f"OrbitElements: perigee radius {perigee_km:.1f} km is inside the Earth "
                f"(altitude_km={self.altitude_km}, eccentricity={self.eccentricity})"
            )

    @property
    def semi_major_axis_km(self) -> float:
        return self.altitude_km + R_EARTH_EQUATORIAL_KM


def _kozai_from_brouwer(n_brouwer_rad_min: float, eccentricity: float, inclination_rad: float) -> float:
    """Invert SGP4's initl(): the Kozai mean motion whose un-Kozai'd (Brouwer) value is n_brouwer.

    SGP4 reads mean motion in Kozai's convention and converts it to Brouwer's, and its mean
    semi-major axis is (ke/n_brouwer)^(2/3). The two differ by O(J2) (~0.05 % in n at 325 km),
    so the requested semi-major axis fixes n_brouwer and this finds the input that produces it.
    """
    cos_i = math.cos(inclination_rad)
    one_minus_e2 = 1.0 - eccentricity**2
    d1 = 0.75 * _WGS72.j2 * (3.0 * cos_i**2 - 1.0) / (math.sqrt(one_minus_e2) * one_minus_e2)
    n_kozai = n_brouwer_rad_min
    for _ in range(50):  # a contraction by ~J2: converges to machine precision in a few steps
        ak = (_WGS72.xke / n_kozai) ** (2.0 / 3.0)
        delta = d1 / ak**2
        adel = ak * (1.0 - delta**2 - delta * (1.0 / 3.0 + 134.0 * delta**2 / 81.0))
        delta = d1 / adel**2
        updated = n_brouwer_rad_min * (1.0 + delta)
        if abs(updated - n_kozai) <= 1e-15 * n_kozai:
            return updated
        n_kozai = updated
    return n_kozai


def satrec_from_elements(elements: OrbitElements) -> Satrec:
    """An SGP4 satellite (WGS72, improved mode) whose mean semi-major axis is the requested one."""
    # SGP4 works in Earth radii of its own (WGS72) model; convert the semi-major axis in km.
    a_er = elements.semi_major_axis_km / _WGS72.radiusearthkm
    n_brouwer = _WGS72.xke / a_er**1.5  # rad/min
    inclination_rad = math.radians(elements.inclination_deg)
    n_kozai = _kozai_from_brouwer(n_brouwer, elements.eccentricity, inclination_rad)
    epoch_days = (elements.epoch_utc - _SGP4_EPOCH0) / timedelta(days=1)
    satrec = Satrec()
    satrec.sgp4init(
        WGS72,
        "i",
        0,  # catalogue number: none
        epoch_days,
        elements.bstar_per_earth_radius,
        0.0,  # ndot: unused by SGP4 propagation
        0.0,  # nddot: unused by SGP4 propagation
        elements.eccentricity,
        math.radians(elements.arg_perigee_deg),
        inclination_rad,
        math.radians(elements.mean_anomaly_deg),
        n_kozai,
        math.radians(elements.raan_deg),
    )
    if satrec.error:
        raise ValueError(f"SGP4 rejected the elements {elements}: {SGP4_ERRORS[satrec.error]}")
    return satrec


def _tle_checksum(line: str) -> int:
    return sum(int(c) if c.isdigit() else (1 if c == "-" else 0) for c in line[:68]) % 10


def satrec_from_tle(line1: str, line2: str) -> Satrec:
    """Parse a two-line element set, checking its format and checksums first."""
    lines = [line1.rstrip(), line2.rstrip()]
    for number, line in enumerate(lines, start=1):
        if len(line) != 69:
            raise ValueError(f"TLE line {number} must be 69 characters, got {len(line)}: {line!r}")
        if not line.startswith(f"{number} "):
            raise ValueError(f"TLE line {number} must start with '{number} ', got {line[:2]!r}")
        if not line[68].isdigit() or int(line[68]) != _tle_checksum(line):
            raise ValueError(
                f"TLE line {number} checksum mismatch: last digit is {line[68]!r}, "
                f"computed {_tle_checksum(line)}"
            )
    if lines[0][2:7] != lines[1][2:7]:
        raise ValueError(
            f"TLE catalogue numbers differ: line 1 has {lines[0][2:7]!r}, line 2 has {lines[1][2:7]!r}"
        )
    try:
        satrec = Satrec.twoline2rv(lines[0], lines[1], WGS72)
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"TLE could not be parsed: {exc}") from exc
    if satrec.error:
        raise ValueError(f"TLE rejected by SGP4: {SGP4_ERRORS[satrec.error]}")
    if not satrec.no_kozai > 0.0:
        raise ValueError(f"TLE mean motion must be positive, got {satrec.no_kozai} rad/min")
    return satrec


def _as_times(t_s: np.ndarray) -> np.ndarray:
    times = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
    if times.ndim != 1:
        raise ValueError(f"t_s must be one-dimensional, got shape {times.shape}")
    if not np.all(np.isfinite(times)):
        raise ValueError("t_s must be finite")
    return times


class OrbitPropagator:
    """Vectorized SGP4 from sim time zero `epoch_utc` (which may differ from the element epoch)."""

    def __init__(self, satrec: Satrec, epoch_utc: datetime) -> None:
        self.satrec = satrec
        self.epoch_utc = epoch_utc
        whole, fraction = utc_julian_date(epoch_utc)
        # Seconds from the element epoch to sim time zero, kept apart from t_s for precision.
        self._offset_s = ((whole - satrec.jdsatepoch) + (fraction - satrec.jdsatepochF)) * SECONDS_PER_DAY

    @property
    def mean_motion_period_s(self) -> float:
        """Orbital period from SGP4's mean motion (no_kozai, rad/min): what "one orbit" means."""
        return 2.0 * math.pi / self.satrec.no_kozai * 60.0

    def propagate_teme(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions (N,3) km and velocities (N,3) km/s in TEME at sim times t_s (s)."""
        times = _as_times(t_s)
        jd = np.full(times.shape, self.satrec.jdsatepoch)
        fr = self.satrec.jdsatepochF + (self._offset_s + times) / SECONDS_PER_DAY
        errors, r_km, v_km_s = self.satrec.sgp4_array(jd, fr)
        if errors.any():
            first = int(np.flatnonzero(errors)[0])
            code = int(errors[first])
            raise PropagationError(
                f"SGP4 error {code} at t_s={times[first]:.3f} s "
                f"({np.count_nonzero(errors)} of {times.size} samples failed): {SGP4_ERRORS[code]}"
            )
        return r_km, v_km_s
