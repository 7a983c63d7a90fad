"""The batched orbit fast path: everything the world needs per tick, precomputed over a time grid.

One call does one SGP4 batch, one skyfield evaluation of the Sun on a 60 s grid, and numpy for
the rest; the simulator indexes the arrays per tick and never calls skyfield itself.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from sim.constants import AU_KM
from sim.eclipse import beta_angle_deg, shadow_function, sunlit_fraction
from sim.geodesy import ecef_to_geodetic, gmst_rad, teme_to_ecef_km
from sim.orbit import OrbitPropagator
from sim.sun import sun_position_teme_km


@dataclass(frozen=True, eq=False)  # eq=False: arrays do not compare to a single bool
class OrbitTrack:
    """Samples at sim times t_s (s); vectors (N,3), everything else (N,). Arrays are read-only."""

    t_s: np.ndarray
    r_teme_km: np.ndarray
    v_teme_km_s: np.ndarray
    sun_teme_km: np.ndarray  # geocentric apparent Sun
    lat_deg: np.ndarray  # WGS84 geodetic
    lon_deg: np.ndarray  # [-180, 180)
    alt_km: np.ndarray  # above the WGS84 ellipsoid
    sunlit_fraction: np.ndarray  # visible share of the Sun's disk, 0 umbra .. 1 full sun
    shadow_signed: np.ndarray  # rad, >0 while the Sun's centre is visible (eclipse.shadow_function)
    sun_distance_au: np.ndarray  # satellite to Sun, for irradiance
    cos_sun_zenith: np.ndarray  # unit(r_sat) . unit(r_sun): > 0 over the day side
    beta_deg: np.ndarray  # Sun elevation above the orbit plane

    def __post_init__(self) -> None:
        for field in fields(self):
            # A read-only view: the track cannot be edited, and the caller's arrays keep their flags.
            view = np.asarray(getattr(self, field.name), dtype=np.float64).view()
            view.setflags(write=False)
            object.__setattr__(self, field.name, view)

    def __len__(self) -> int:
        return int(self.t_s.size)


def compute_track(propagator: OrbitPropagator, t_s: np.ndarray) -> OrbitTrack:
    """Orbit, Sun, ground track and shadow at sim times t_s (s after propagator.epoch_utc)."""
    times = np.array(t_s, dtype=np.float64, ndmin=1)
    if times.ndim != 1:
        raise ValueError(f"t_s must be one-dimensional, got shape {times.shape}")
    r_km, v_km_s = propagator.propagate_teme(times)
    sun_km = sun_position_teme_km(propagator.epoch_utc, times)
    lat_deg, lon_deg, alt_km = ecef_to_geodetic(teme_to_ecef_km(r_km, gmst_rad(propagator.epoch_utc, times)))
    r_norm = np.sqrt(np.einsum("ij,ij->i", r_km, r_km))
    sun_norm = np.sqrt(np.einsum("ij,ij->i", sun_km, sun_km))
    to_sun = sun_km - r_km
    return OrbitTrack(
        t_s=times,
        r_teme_km=r_km,
        v_teme_km_s=v_km_s,
        sun_teme_km=sun_km,
        lat_deg=lat_deg,
        lon_deg=lon_deg,
        alt_km=alt_km,
        sunlit_fraction=sunlit_fraction(r_km, sun_km),
        shadow_signed=shadow_function(r_km, sun_km),
        sun_distance_au=np.sqrt(np.einsum("ij,ij->i", to_sun, to_sun)) / AU_KM,
        cos_sun_zenith=np.einsum("ij,ij->i", r_km, sun_km) / (r_norm * sun_norm),
        beta_deg=beta_angle_deg(r_km, v_km_s, sun_km),
    )
