"""Earth's shadow: a conical umbra and penumbra from a spherical Earth and the Sun's disk.

Seen from the satellite, the Earth (radius R_EARTH_EQUATORIAL_KM) and the Sun are two disks of
apparent radii theta_e and theta_s whose centres are theta apart. The sunlit fraction is the share
of the Sun's disk not covered by the Earth's, computed with flat circle-overlap areas (the disks
are well under a degree and a few tens of degrees: the error is second order in the Sun's radius).
"""

from __future__ import annotations

import numpy as np

from sim.constants import R_EARTH_EQUATORIAL_KM, R_SUN_KM


def _norm(v: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("...i,...i->...", v, v))


def _angle_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # atan2(|a x b|, a.b) stays accurate near 0 and pi, where arccos of a dot product does not.
    return np.arctan2(_norm(np.cross(a, b)), np.einsum("...i,...i->...", a, b))


def _disks(r_sat_km: np.ndarray, r_sun_km: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(theta_s, theta_e, separation) in radians, as seen from the satellite."""
    r_sat = np.asarray(r_sat_km, dtype=np.float64)
    to_sun = np.asarray(r_sun_km, dtype=np.float64) - r_sat
    theta_s = np.arcsin(np.minimum(R_SUN_KM / _norm(to_sun), 1.0))
    theta_e = np.arcsin(np.minimum(R_EARTH_EQUATORIAL_KM / _norm(r_sat), 1.0))
    separation = _angle_between(to_sun, -r_sat)
    return theta_s, theta_e, separation


def sun_angular_radius_rad(r_sat_km: np.ndarray, r_sun_km: np.ndarray) -> np.ndarray:
    """Apparent radius of the Sun's disk from the satellite (~4.65e-3 rad)."""
    return _disks(r_sat_km, r_sun_km)[0]


def sunlit_fraction(r_sat_km: np.ndarray, r_sun_km: np.ndarray) -> np.ndarray:
    """Visible fraction of the Sun's disk, (N,) in [0, 1]: 0 in umbra, 1 in full sun."""
    theta_s, theta_e, sep = _disks(r_sat_km, r_sun_km)
    fraction = np.ones_like(sep)
    umbra = sep <= theta_e - theta_s
    fraction[umbra] = 0.0
    # Earth's disk inside the Sun's (an annular eclipse: not reachable from LEO, kept for safety).
    annular = sep <= theta_s - theta_e
    fraction[annular] = 1.0 - (theta_e[annular] / theta_s[annular]) ** 2
    partial = (sep < theta_s + theta_e) & ~umbra & ~annular
    a, b, c = theta_s[partial], theta_e[partial], sep[partial]
    # Overlap of circles of radii a and b, centres c apart (Montenbruck & Gill, eq. 3.87).
    x = (c * c + a * a - b * b) / (2.0 * c)
    y = np.sqrt(np.maximum(a * a - x * x, 0.0))
    overlap = (a * a * np.arccos(np.clip(x / a, -1.0, 1.0))
               + b * b * np.arccos(np.clip((c - x) / b, -1.0, 1.0)) - c * y)
    fraction[partial] = np.clip(1.0 - overlap / (np.pi * a * a), 0.0, 1.0)
    return fraction


def shadow_function(r_sat_km: np.ndarray, r_sun_km: np.ndarray) -> np.ndarray:
    """Separation of the Sun's centre from the Earth's limb, radians: >0 visible, <0 occulted.

    Smooth in time, so boundaries can be interpolated between samples: the Sun's centre sets at
    0, umbra begins at -theta_s and penumbra at +theta_s (see sun_angular_radius_rad).
    """
    _, theta_e, sep = _disks(r_sat_km, r_sun_km)
    return sep - theta_e


def _intervals_nonpositive(t_s: np.ndarray, g: np.ndarray) -> list[tuple[float, float]]:
    """Intervals where the piecewise-linear interpolant of samples g is <= 0.

    An interval in progress at the first sample starts at t_s[0]; one still open at the last
    sample ends at t_s[-1]. A lone non-positive sample between positive ones gives a zero-length
    interval (t, t) only if it is exactly zero; otherwise its crossings bracket it.
    """
    t = np.asarray(t_s, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    if t.ndim != 1 or g.shape != t.shape:
        raise ValueError(f"t_s and values must be 1-D of the same length, got {t.shape} and {g.shape}")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(g))):
        raise ValueError("t_s and values must be finite")
    if t.size > 1 and not np.all(np.diff(t) > 0):
        raise ValueError("t_s must be strictly increasing")
    inside = g <= 0.0
    if not inside.any():
        return []
    change = np.diff(inside.astype(np.int8))
    entries = np.flatnonzero(change == 1)  # sample i outside, i+1 inside
    exits = np.flatnonzero(change == -1)  # sample i inside, i+1 outside

    def crossing(i: np.ndarray) -> np.ndarray:
        return t[i] + (t[i + 1] - t[i]) * g[i] / (g[i] - g[i + 1])

    starts = ([t[0]] if inside[0] else []) + crossing(entries).tolist()
    ends = crossing(exits).tolist() + ([t[-1]] if inside[-1] else [])
    return [(float(s), float(e)) for s, e in zip(starts, ends)]


def umbra_intervals(t_s: np.ndarray, fraction: np.ndarray) -> list[tuple[float, float]]:
    """[(start_s, end_s)] where the sunlit fraction is 0, linearly interpolated between samples.

    The fraction is flat at zero inside the umbra, so its linear interpolant reaches zero exactly
    at the first and last zero samples: boundaries fall on samples (within one step of the truth).
    For sub-sample boundaries use shadow_intervals with threshold_rad=-sun_angular_radius_rad.
    An umbra in progress at t_s[0] starts there; one still open at t_s[-1] ends there.
    """
    return _intervals_nonpositive(t_s, fraction)


def shadow_intervals(t_s: np.ndarray, signed: np.ndarray,
                     threshold_rad: float | np.ndarray = 0.0) -> list[tuple[float, float]]:
    """[(start_s, end_s)] where shadow_function values are <= threshold_rad, boundaries interpolated.

    threshold_rad 0: the Sun's centre is hidden (skyfield's is_sunlit convention);
    -theta_s: umbra; +theta_s: any part of the Sun hidden. It may be an array, one per sample.
    Intervals open at either end are cut at t_s[0] / t_s[-1].
    """
    return _intervals_nonpositive(t_s, np.asarray(signed, dtype=np.float64) - threshold_rad)


def beta_angle_deg(r_km: np.ndarray, v_km_s: np.ndarray, r_sun_km: np.ndarray) -> np.ndarray:
    """Sun elevation above the orbit plane, degrees: positive on the side of the orbit normal r x v."""
    normal = np.cross(r_km, v_km_s)
    sin_beta = np.einsum("...i,...i->...", normal, r_sun_km) / (_norm(normal) * _norm(np.asarray(r_sun_km)))
    return np.degrees(np.arcsin(np.clip(sin_beta, -1.0, 1.0)))
