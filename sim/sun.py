"""Geocentric Sun vector in the TEME frame, from skyfield on a coarse grid, interpolated.

Which position: the apparent one (`earth.at(t).observe(sun).apparent()`): light-time corrected
and aberrated, i.e. the direction sunlight actually arrives from in the Earth's frame, which is
what casts the shadow. It differs from the geometric position (what skyfield's `is_sunlit` uses)
by ~20.5 arcsec of annual aberration: ~0.7 km at the shadow edge, ~0.1 s of eclipse timing.

Why a grid: skyfield costs tens of µs a time even vectorized (mostly the nutation series), while
the Sun moves ~1°/day (omega ~2e-7 rad/s). Linear interpolation between 60 s nodes errs by
~(omega*dt)^2/8 ~ 2e-11 of the distance: far below anything the shadow or the arrays can see.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
from skyfield.sgp4lib import TEME

from sim.constants import SECONDS_PER_DAY
from sim.ephemeris import ephemeris, timescale

SUN_GRID_STEP_S = 60.0
# GCRS -> TEME is precession plus nutation: its fastest sizeable term (13.7 d, 0.2") changes it by
# < 1e-10 rad within an hour of linear interpolation, and skyfield's IAU 2000A nutation is the
# costly part (~150 µs a time), so the rotation gets its own, coarser grid.
ROTATION_GRID_STEP_S = 3600.0


def _times_after(epoch_utc: datetime, t_s: np.ndarray):
    """Skyfield Time for epoch + t_s elapsed SI seconds (counted in TAI, so leap seconds are exact)."""
    ts = timescale()
    t0 = ts.from_datetime(epoch_utc)
    return ts.tai_jd(t0.whole, t0.tai_fraction + np.asarray(t_s, dtype=np.float64) / SECONDS_PER_DAY)


def _interpolate_on_grid(times: np.ndarray, step_s: float, evaluate) -> np.ndarray:
    """Linear interpolation of evaluate(node_times) -> (n, ...) between grid nodes k*step_s.

    Nodes sit at whole multiples of step_s from sim time zero, so a time gets the same value
    whichever batch it is computed in; only the nodes that bracket some time are evaluated.
    """
    position = times / step_s
    lower = np.floor(position)
    nodes = np.unique(np.concatenate([lower, lower + 1.0]))
    values = evaluate(nodes * step_s)
    i = np.searchsorted(nodes, lower)  # nodes[i] == lower, nodes[i + 1] == lower + 1
    weight = (position - lower).reshape((-1,) + (1,) * (values.ndim - 1))
    return values[i] * (1.0 - weight) + values[i + 1] * weight


def gcrs_to_teme_matrices(epoch_utc: datetime, t_s: np.ndarray) -> np.ndarray:
    """(N,3,3) rotations r_teme = M @ r_gcrs, from skyfield's TEME frame, on an hourly grid."""
    times = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
    return _interpolate_on_grid(
        times, ROTATION_GRID_STEP_S,
        lambda nodes_s: np.moveaxis(TEME.rotation_at(_times_after(epoch_utc, nodes_s)), -1, 0),
    )


def sun_gcrs_exact_km(epoch_utc: datetime, t_s: np.ndarray) -> np.ndarray:
    """Apparent geocentric Sun (N,3) km in GCRS straight from skyfield."""
    eph = ephemeris()
    return eph["earth"].at(_times_after(epoch_utc, t_s)).observe(eph["sun"]).apparent().xyz.km.T


def sun_position_teme_km(epoch_utc: datetime, t_s: np.ndarray,
                         grid_step_s: float = SUN_GRID_STEP_S) -> np.ndarray:
    """Apparent geocentric Sun (N,3) km in TEME at sim times t_s, interpolated from a grid."""
    times = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
    if times.ndim != 1:
        raise ValueError(f"t_s must be one-dimensional, got shape {times.shape}")
    if times.size == 0:
        return np.empty((0, 3))
    if not np.all(np.isfinite(times)):
        raise ValueError("t_s must be finite")

    def sun_teme_at(nodes_s: np.ndarray) -> np.ndarray:
        rotations = gcrs_to_teme_matrices(epoch_utc, nodes_s)
        return np.einsum("nij,nj->ni", rotations, sun_gcrs_exact_km(epoch_utc, nodes_s))

    return _interpolate_on_grid(times, grid_step_s, sun_teme_at)
