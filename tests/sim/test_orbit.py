"""SGP4 orbit set-up and propagation, against Kepler, first-order J2 theory and skyfield."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sgp4.earth_gravity import wgs72
from skyfield.api import EarthSatellite
from skyfield.sgp4lib import TEME

from sim.constants import J2, MU_EARTH_KM3_S2, R_EARTH_EQUATORIAL_KM
from sim.ephemeris import timescale
from sim.orbit import (
    OrbitElements,
    OrbitPropagator,
    PropagationError,
    orbital_period_s,
    satrec_from_elements,
    satrec_from_tle,
)

EPOCH = datetime(2026, 3, 20, tzinfo=timezone.utc)
# A real ISS element set (from skyfield's own test suite), checksums valid.
ISS_LINE1 = "1 25544U 98067A   18184.80969102  .00001614  00000-0  31745-4 0  9993"
ISS_LINE2 = "2 25544  51.6414 295.8524 0003435 262.6267 204.2868 15.54005638121106"


def _with_checksum(first_68: str) -> str:
    # The TLE rule: digits count their value, '-' counts 1, everything else 0; modulo 10.
    total = sum(int(c) if c.isdigit() else c == "-" for c in first_68)
    return first_68 + str(total % 10)


def _ascending_node_times(t_s: np.ndarray, z_km: np.ndarray) -> np.ndarray:
    i = np.flatnonzero((z_km[:-1] < 0.0) & (z_km[1:] >= 0.0))
    return t_s[i] + (t_s[i + 1] - t_s[i]) * z_km[i] / (z_km[i] - z_km[i + 1])


def test_orbital_period_kepler_hand_value() -> None:
    # a = 7000 km: 2*pi*sqrt(7000^3 / 398600.4418) = 5828.516 s.
    assert orbital_period_s(7000.0) == pytest.approx(5828.516, abs=1e-3)


@pytest.mark.parametrize("altitude_km, inclination_deg", [(325.0, 45.0), (650.0, 98.0)])
def test_nodal_period_matches_kepler_and_j2_theory(altitude_km: float, inclination_deg: float) -> None:
    elements = OrbitElements(altitude_km, inclination_deg, 30.0, EPOCH)
    propagator = OrbitPropagator(satrec_from_elements(elements), EPOCH)
    t_s = np.arange(0.0, 6 * 6000.0, 1.0)
    r_km, _ = propagator.propagate_teme(t_s)
    nodes_s = _ascending_node_times(t_s, r_km[:, 2])
    assert nodes_s.size >= 5
    period_s = float(np.mean(np.diff(nodes_s)))

    a_km = elements.semi_major_axis_km
    kepler_s = 2.0 * math.pi * math.sqrt(a_km**3 / MU_EARTH_KM3_S2)
    assert abs(period_s - kepler_s) / kepler_s < 0.005

    # Sharper: the draconic period from first-order secular J2 rates (Vallado, Brouwer),
    # du/dt = n (1 + 3/4 J2 (R/a)^2 (8 cos^2 i - 2)) for a circular orbit. Choosing the Kozai
    # instead of the Brouwer mean motion would be off here by 3.5e-4 (45°) to 7e-4 (98°).
    n = math.sqrt(MU_EARTH_KM3_S2 / a_km**3)
    cos2_i = math.cos(math.radians(inclination_deg)) ** 2
    j2_term = 0.75 * J2 * (R_EARTH_EQUATORIAL_KM / a_km) ** 2 * (8.0 * cos2_i - 2.0)
    draconic_s = 2.0 * math.pi / (n * (1.0 + j2_term))
    assert abs(period_s - draconic_s) / draconic_s < 5e-5


@settings(max_examples=40, deadline=None)
@given(
    altitude_km=st.floats(200.0, 2000.0),
    inclination_deg=st.floats(0.0, 180.0),
    eccentricity=st.floats(0.0, 0.02),
)
def test_sgp4_mean_semi_major_axis_is_the_requested_one(
    altitude_km: float, inclination_deg: float, eccentricity: float
) -> None:
    elements = OrbitElements(altitude_km, inclination_deg, 0.0, EPOCH, eccentricity=eccentricity)
    satrec = satrec_from_elements(elements)
    # satrec.a is SGP4's own (Brouwer) mean semi-major axis, in its Earth radii.
    assert satrec.a * wgs72.radiusearthkm == pytest.approx(elements.semi_major_axis_km, abs=1e-6)
    assert satrec.inclo == pytest.approx(math.radians(inclination_deg))


def test_elements_are_validated() -> None:
    with pytest.raises(ValueError, match="epoch_utc"):
        OrbitElements(325.0, 45.0, 0.0, datetime(2026, 3, 20))  # naive
    with pytest.raises(ValueError, match="perigee"):
        OrbitElements(325.0, 45.0, 0.0, EPOCH, eccentricity=0.1)
    with pytest.raises(ValueError, match="eccentricity"):
        OrbitElements(325.0, 45.0, 0.0, EPOCH, eccentricity=1.0)
    with pytest.raises(ValueError, match="inclination"):
        OrbitElements(325.0, 190.0, 0.0, EPOCH)


def test_sim_epoch_may_differ_from_element_epoch() -> None:
    satrec = satrec_from_elements(OrbitElements(550.0, 53.0, 10.0, EPOCH, eccentricity=0.001))
    at_epoch = OrbitPropagator(satrec, EPOCH)
    later = OrbitPropagator(satrec, EPOCH + timedelta(seconds=1234.5))
    t_s = np.array([0.0, 10.0, 5000.0])
    r_a, v_a = at_epoch.propagate_teme(t_s + 1234.5)
    r_b, v_b = later.propagate_teme(t_s)
    np.testing.assert_allclose(r_b, r_a, atol=1e-6)
    np.testing.assert_allclose(v_b, v_a, atol=1e-9)


def test_tle_propagates_like_skyfield() -> None:
    ts = timescale()
    satrec = satrec_from_tle(ISS_LINE1, ISS_LINE2)
    start = datetime(2018, 7, 3, 12, 0, tzinfo=timezone.utc)  # ~7 h after the TLE epoch
    propagator = OrbitPropagator(satrec, start)
    t_s = np.linspace(0.0, 86400.0, 97)
    r_km, v_km_s = propagator.propagate_teme(t_s)

    satellite = EarthSatellite(ISS_LINE1, ISS_LINE2, "ISS", ts)
    times = ts.utc(2018, 7, 3, 12, 0, t_s)
    r_ref, v_ref = satellite.at(times).frame_xyz_and_velocity(TEME)
    np.testing.assert_allclose(r_km, r_ref.km.T, atol=1e-3)  # 1 m
    np.testing.assert_allclose(v_km_s, v_ref.km_per_s.T, atol=1e-6)  # 1 mm/s


def test_checksum_helper_reproduces_real_lines() -> None:
    assert _with_checksum(ISS_LINE1[:68]) == ISS_LINE1
    assert _with_checksum(ISS_LINE2[:68]) == ISS_LINE2


@pytest.mark.parametrize(
    "line1, line2, message",
    [
        (ISS_LINE1[:-1] + "0", ISS_LINE2, "line 1 checksum"),
        (ISS_LINE1, ISS_LINE2[:-1] + "0", "line 2 checksum"),
        (ISS_LINE1[:60], ISS_LINE2, "69 characters"),
        (ISS_LINE2, ISS_LINE1, "must start with '1 '"),
        (ISS_LINE1, _with_checksum("2 25545" + ISS_LINE2[7:68]), "catalogue numbers differ"),
    ],
)
def test_bad_tle_is_rejected_with_a_clear_message(line1: str, line2: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        satrec_from_tle(line1, line2)


def test_decayed_orbit_raises() -> None:
    # 200 km with heavy drag re-enters within days; SGP4 then reports error 6 (decayed).
    elements = OrbitElements(200.0, 51.6, 0.0, EPOCH, bstar_per_earth_radius=0.01)
    propagator = OrbitPropagator(satrec_from_elements(elements), EPOCH)
    propagator.propagate_teme(np.array([0.0, 3600.0]))  # fine early on
    with pytest.raises(PropagationError, match="decayed"):
        propagator.propagate_teme(np.arange(0.0, 30 * 86400.0, 3600.0))
