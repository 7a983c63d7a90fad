"""The batched fast path against skyfield (positions, ground track, Sun) and an almanac formula."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skyfield.api import EarthSatellite, wgs84
from skyfield.framelib import itrs
from skyfield.sgp4lib import TEME, theta_GMST1982

from sim.ephemeris import ephemeris, timescale
from sim.geodesy import ecef_to_geodetic, gmst_rad, teme_to_ecef_km
from sim.orbit import OrbitElements, OrbitPropagator, satrec_from_elements
from sim.orbit_track import OrbitTrack, compute_track
from sim.sun import sun_position_teme_km

EPOCH = datetime(2026, 5, 3, 7, 21, 13, 250000, tzinfo=timezone.utc)
ARCSEC = math.radians(1.0 / 3600.0)


def _angle_rad(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), np.einsum("...i,...i->...", a, b))


@pytest.fixture(scope="module")
def setup():
    satrec = satrec_from_elements(OrbitElements(325.0, 45.0, 123.0, EPOCH, eccentricity=0.002,
                                                arg_perigee_deg=40.0, mean_anomaly_deg=10.0))
    propagator = OrbitPropagator(satrec, EPOCH)
    # Off the 60 s Sun grid on purpose: seeded random times over a day.
    t_s = np.sort(np.random.default_rng(3).uniform(0.0, 86400.0, 240))
    ts = timescale()
    t0 = ts.from_datetime(EPOCH)
    times = ts.tai_jd(t0.whole, t0.tai_fraction + t_s / 86400.0)
    return propagator, compute_track(propagator, t_s), EarthSatellite.from_satrec(satrec, ts), times


def test_positions_match_skyfield_in_teme_and_earth_fixed(setup) -> None:
    propagator, track, satellite, times = setup
    geocentric = satellite.at(times)
    np.testing.assert_allclose(track.r_teme_km, geocentric.frame_xyz(TEME).km.T, atol=1e-3)  # 1 m
    # Earth-fixed: ours is one GMST-1982 rotation with UT1-UTC frozen at the epoch; skyfield goes
    # TEME -> GCRS -> ITRS with UT1 at each time. Polar motion is off in both.
    ecef_km = teme_to_ecef_km(track.r_teme_km, gmst_rad(propagator.epoch_utc, track.t_s))
    error_km = np.linalg.norm(ecef_km - geocentric.frame_xyz(itrs).km.T, axis=1)
    assert error_km.max() < 0.01  # 10 m


def test_ground_track_matches_skyfield_wgs84(setup) -> None:
    _, track, satellite, times = setup
    place = wgs84.geographic_position_of(satellite.at(times))
    np.testing.assert_allclose(track.lat_deg, place.latitude.degrees, atol=1e-4)  # ~11 m
    lon_diff = (track.lon_deg - place.longitude.degrees + 180.0) % 360.0 - 180.0
    assert np.abs(lon_diff).max() < 1e-4
    np.testing.assert_allclose(track.alt_km, place.elevation.km, atol=0.01)


def test_sun_matches_skyfield_off_grid(setup) -> None:
    propagator, track, _, times = setup
    eph = ephemeris()
    apparent = eph["earth"].at(times).observe(eph["sun"]).apparent()
    exact_km = apparent.frame_xyz(TEME).km.T
    # Interpolation from the 60 s grid (and the hourly rotation grid) costs < 0.01".
    assert _angle_rad(track.sun_teme_km, exact_km).max() < 0.01 * ARCSEC
    np.testing.assert_allclose(np.linalg.norm(track.sun_teme_km, axis=1), np.linalg.norm(exact_km, axis=1),
                               rtol=1e-9)
    # The model is the apparent Sun: ~20.5" of annual aberration away from the geometric one.
    geometric_km = (eph["sun"] - eph["earth"]).at(times).frame_xyz(TEME).km.T
    offset = _angle_rad(track.sun_teme_km, geometric_km) / ARCSEC
    assert np.all((offset > 19.5) & (offset < 21.5))


def test_sun_matches_the_almanac_low_precision_formula() -> None:
    # Astronomical Almanac, "low precision formulas for the Sun" (0.01° for 1950-2050); its
    # frame is the mean equator and equinox of date, within ~20" (nutation) of TEME.
    t_s = np.linspace(0.0, 365.0 * 86400.0, 37)
    ours = sun_position_teme_km(EPOCH, t_s)
    n = (datetime(2026, 5, 3, 7, 21, 13, 250000) - datetime(2000, 1, 1, 12)).total_seconds() / 86400.0
    n = n + t_s / 86400.0
    mean_longitude = np.radians(280.460 + 0.9856474 * n)
    anomaly = np.radians(357.528 + 0.9856003 * n)
    longitude = mean_longitude + np.radians(1.915 * np.sin(anomaly) + 0.020 * np.sin(2.0 * anomaly))
    obliquity = np.radians(23.439 - 4.0e-7 * n)
    distance_au = 1.00014 - 0.01671 * np.cos(anomaly) - 0.00014 * np.cos(2.0 * anomaly)
    almanac = np.stack([np.cos(longitude), np.cos(obliquity) * np.sin(longitude),
                        np.sin(obliquity) * np.sin(longitude)], axis=1)
    assert np.degrees(_angle_rad(ours, almanac)).max() < 0.02
    # Its distance ignores the Moon (Earth wobbles ~3e-5 AU about the barycentre) and planets.
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1) / 149597870.7, distance_au, atol=2e-4)


def test_gmst_matches_skyfield(setup) -> None:
    propagator, track, _, times = setup
    reference, _ = theta_GMST1982(times.whole, times.ut1_fraction)
    ours = gmst_rad(propagator.epoch_utc, track.t_s)
    diff = (ours - reference + math.pi) % (2.0 * math.pi) - math.pi
    assert np.abs(diff).max() < 2e-7  # UT1-UTC frozen at the epoch: ~ms/day of drift


@settings(max_examples=60, deadline=None)
@given(lat_deg=st.floats(-90.0, 90.0), lon_deg=st.floats(-180.0, 179.999), alt_km=st.floats(-5.0, 40000.0))
def test_geodetic_inverts_skyfield_wgs84(lat_deg: float, lon_deg: float, alt_km: float) -> None:
    ecef_km = wgs84.latlon(lat_deg, lon_deg, elevation_m=alt_km * 1000.0).itrs_xyz.km
    lat, lon, alt = ecef_to_geodetic(ecef_km[None, :])
    assert lat[0] == pytest.approx(lat_deg, abs=1e-9)
    assert alt[0] == pytest.approx(alt_km, abs=1e-6)
    if abs(lat_deg) < 89.999:  # longitude is undefined at the poles
        assert (lon[0] - lon_deg + 180.0) % 360.0 - 180.0 == pytest.approx(0.0, abs=1e-9)
    assert -180.0 <= lon[0] < 180.0


def test_longitude_wraps_into_half_open_range() -> None:
    _, lon, _ = ecef_to_geodetic(np.array([[-7000.0, 0.0, 0.0], [-7000.0, -1e-9, 0.0], [7000.0, 0.0, 0.0]]))
    np.testing.assert_allclose(lon, [-180.0, -180.0, 0.0], atol=1e-9)


def test_track_fields_are_consistent_and_read_only(setup) -> None:
    _, track, _, _ = setup
    n = track.t_s.size
    assert len(track) == n
    for name in ("r_teme_km", "v_teme_km_s", "sun_teme_km"):
        assert getattr(track, name).shape == (n, 3)
    for name in ("lat_deg", "lon_deg", "alt_km", "sunlit_fraction", "shadow_signed",
                 "sun_distance_au", "cos_sun_zenith", "beta_deg"):
        assert getattr(track, name).shape == (n,)
    with pytest.raises(ValueError):
        track.lat_deg[0] = 0.0
    assert np.all((track.sunlit_fraction >= 0.0) & (track.sunlit_fraction <= 1.0))
    assert np.all((0.983 < track.sun_distance_au) & (track.sun_distance_au < 1.017))
    # Over the day side (Sun above the local horizontal plane) the Earth cannot hide the Sun,
    # and the umbra lies on the night side.
    assert np.all(track.sunlit_fraction[track.cos_sun_zenith > 0.0] == 1.0)
    assert np.all(track.cos_sun_zenith[track.sunlit_fraction == 0.0] < 0.0)
    assert np.all(np.abs(track.beta_deg) <= 90.0)


def test_compute_track_rejects_bad_times(setup) -> None:
    propagator = setup[0]
    with pytest.raises(ValueError, match="one-dimensional"):
        compute_track(propagator, np.zeros((2, 2)))
    assert isinstance(compute_track(propagator, np.array([0.0, 1.0])), OrbitTrack)


def test_overlapping_windows_agree(setup) -> None:
    # The simulator recomputes tracks in sliding windows; a time must get the same state in each.
    propagator = setup[0]
    first = compute_track(propagator, np.arange(0.0, 7200.0, 10.0))
    second = compute_track(propagator, np.arange(3605.0, 10800.0, 5.0))
    overlap_first, overlap_second = first.t_s >= 3605.0, second.t_s < 7200.0
    overlap_second &= np.isin(second.t_s, first.t_s)
    assert np.count_nonzero(overlap_first) == np.count_nonzero(overlap_second) > 300
    for name in ("r_teme_km", "sun_teme_km", "lat_deg", "sunlit_fraction", "shadow_signed", "beta_deg"):
        np.testing.assert_allclose(getattr(first, name)[overlap_first], getattr(second, name)[overlap_second],
                                   rtol=1e-12, atol=1e-12)
