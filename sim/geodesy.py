"""Earth rotation (GMST 1982, the angle SGP4's TEME is defined with) and WGS84 geodetic coordinates.

TEME -> ECEF here is a single rotation by GMST about z, i.e. TEME -> PEF; polar motion (<~0.5",
~15 m at the surface) is ignored, so ECEF means PEF. UT1 comes from skyfield's built-in tables
at the epoch; UT1-UTC drifts by ~1 ms/day, so it is held fixed over a track (<~1 m per day of track).
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np

from sim.constants import (
    R_EARTH_EQUATORIAL_KM,
    R_EARTH_POLAR_KM,
    SECONDS_PER_DAY,
    WGS84_ECCENTRICITY_SQ,
)
from sim.ephemeris import timescale

_J2000_JD = 2451545.0


def gmst_rad(epoch_utc: datetime, t_s: np.ndarray) -> np.ndarray:
    """Greenwich mean sidereal angle (IAU 1982, AIAA 2006-6753 App. C) in [0, 2*pi) at epoch + t_s."""
    times = np.asarray(t_s, dtype=np.float64)
    t0 = timescale().from_datetime(epoch_utc)
    # UT1 Julian date split as whole (ends in .0 or .5) + fraction, to keep sub-µs precision.
    fraction_ut1 = t0.ut1_fraction + times / SECONDS_PER_DAY
    centuries = (t0.whole - _J2000_JD + fraction_ut1) / 36525.0
    # GMST(s) = 67310.54841 + (876600 h + 8640184.812866 s) T + 0.093104 T^2 - 6.2e-6 T^3; the
    # 876600 h T term is one turn per UT1 day, so it contributes just the day's fraction.
    seconds = 67310.54841 + (8640184.812866 + (0.093104 - 6.2e-6 * centuries) * centuries) * centuries
    turns = (t0.whole % 1.0 + fraction_ut1 + (seconds / SECONDS_PER_DAY) % 1.0) % 1.0
    return turns * (2.0 * math.pi)


def teme_to_ecef_km(r_teme_km: np.ndarray, gmst: np.ndarray) -> np.ndarray:
    """Rotate (N,3) TEME vectors into the Earth-fixed frame (PEF; polar motion ignored)."""
    r = np.asarray(r_teme_km, dtype=np.float64)
    cos_g, sin_g = np.cos(gmst), np.sin(gmst)
    out = np.empty_like(r)
    out[..., 0] = cos_g * r[..., 0] + sin_g * r[..., 1]
    out[..., 1] = -sin_g * r[..., 0] + cos_g * r[..., 1]
    out[..., 2] = r[..., 2]
    return out


def ecef_to_geodetic(r_ecef_km: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WGS84 (lat_deg, lon_deg in [-180, 180), alt_km) from (N,3) ECEF km.

    Heikkinen's closed form (1982, as in Zhu 1994): exact, no iteration, vectorized; valid
    anywhere but deep inside the Earth (tens of km from its centre).
    """
    r = np.asarray(r_ecef_km, dtype=np.float64)
    x, y, z = r[..., 0], r[..., 1], r[..., 2]
    a, b, e2 = R_EARTH_EQUATORIAL_KM, R_EARTH_POLAR_KM, WGS84_ECCENTRICITY_SQ
    ep2 = (a * a - b * b) / (b * b)
    p = np.hypot(x, y)
    f_term = 54.0 * b * b * z * z
    g_term = p * p + (1.0 - e2) * z * z - e2 * (a * a - b * b)
    c = e2 * e2 * f_term * p * p / g_term**3
    s = np.cbrt(1.0 + c + np.sqrt(c * c + 2.0 * c))
    k = s + 1.0 + 1.0 / s
    big_p = f_term / (3.0 * k * k * g_term * g_term)
    q = np.sqrt(1.0 + 2.0 * e2 * e2 * big_p)
    # The radicand is ~0 over the poles (p -> 0), where rounding can make it slightly negative.
    r0 = -big_p * e2 * p / (1.0 + q) + np.sqrt(np.maximum(
        0.5 * a * a * (1.0 + 1.0 / q) - big_p * (1.0 - e2) * z * z / (q * (1.0 + q)) - 0.5 * big_p * p * p,
        0.0,
    ))
    u = np.hypot(p - e2 * r0, z)
    v = np.sqrt((p - e2 * r0) ** 2 + (1.0 - e2) * z * z)
    z0 = b * b * z / (a * v)
    alt_km = u * (1.0 - b * b / (a * v))
    lat_deg = np.degrees(np.arctan2(z + ep2 * z0, p))
    lon_deg = np.degrees(np.arctan2(y, x))
    lon_deg = (lon_deg + 180.0) % 360.0 - 180.0
    return lat_deg, lon_deg, alt_km
