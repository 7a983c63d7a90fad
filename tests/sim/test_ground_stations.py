"""Ground stations: look angles and pass prediction against skyfield, and the rolling predictor."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skyfield.api import EarthSatellite, wgs84

from sim.ephemeris import timescale
from sim.geodesy import ecef_to_geodetic
from sim.ground_stations import (
    GroundStation,
    PassPredictor,
    earth_fixed_positions,
    geodetic_to_ecef_km,
    geodetic_to_ecef_km_scalar,
    passes,
    stations_from_config,
)
from sim.scenario import load_scenario
from sim.world import make_propagator

DAY_S = 86400.0


class Sky:
    """skyfield's view of a scenario's orbit, on sim seconds since the scenario epoch."""

    def __init__(self, preset: str) -> None:
        self.scenario = load_scenario(preset)
        self.propagator = make_propagator(self.scenario)
        self.ts = timescale()
        self.t0 = self.ts.from_datetime(self.propagator.epoch_utc)
        self.satellite = EarthSatellite.from_satrec(self.propagator.satrec, self.ts)
        self.stations = stations_from_config(self.scenario.ground_stations)

    def times(self, t_s):
        return self.ts.tai_jd(self.t0.whole, self.t0.tai_fraction + np.asarray(t_s, dtype=np.float64) / DAY_S)

    def topos(self, station: GroundStation):
        return wgs84.latlon(station.lat_deg, station.lon_deg, elevation_m=station.alt_m)

    def altaz(self, station: GroundStation, t_s):
        alt, az, distance = (self.satellite - self.topos(station)).at(self.times(t_s)).altaz()
        return alt.degrees, az.degrees, distance.km

    def events(self, station: GroundStation, start_s: float, end_s: float, mask_deg: float | None = None):
        """(rise, culmination, set) times in sim seconds from find_events."""
        mask = station.min_elevation_deg if mask_deg is None else mask_deg
        t, kind = self.satellite.find_events(self.topos(station), self.times(start_s), self.times(end_s),
                                             altitude_degrees=mask)
        seconds = (t - self.t0) * DAY_S
        return seconds[kind == 0], seconds[kind == 1], seconds[kind == 2]


@pytest.fixture(scope="module", params=["starcloud1", "dawn-dusk-650"])
def sky(request):
    return Sky(request.param)


def test_station_position_matches_skyfield_wgs84():
    for lat, lon, alt_m in [(78.23, 15.39, 500.0), (-33.15, -70.67, 730.0), (0.0, 179.9, 0.0), (-90.0, 0.0, 10.0)]:
        station = GroundStation("x", lat, lon, alt_m)
        expected = wgs84.latlon(lat, lon, elevation_m=alt_m).itrs_xyz.km
        np.testing.assert_allclose(station.ecef_km, expected, atol=1e-6)  # 1 mm
        np.testing.assert_allclose(geodetic_to_ecef_km_scalar(lat, lon, alt_m / 1000.0), expected, atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(st.floats(-89.9, 89.9), st.floats(-179.9, 179.9), st.floats(-0.5, 40000.0))
def test_geodetic_to_ecef_inverts_ecef_to_geodetic(lat_deg, lon_deg, alt_km):
    lat, lon, alt = ecef_to_geodetic(geodetic_to_ecef_km(lat_deg, lon_deg, alt_km)[None, :])
    assert lat[0] == pytest.approx(lat_deg, abs=1e-9)
    assert (lon[0] - lon_deg + 180.0) % 360.0 - 180.0 == pytest.approx(0.0, abs=1e-9)
    assert alt[0] == pytest.approx(alt_km, abs=1e-6)


def test_look_angles_match_skyfield_altaz(sky):
    positions = earth_fixed_positions(sky.propagator)
    t_s = np.sort(np.random.default_rng(7).uniform(0.0, DAY_S, 400))
    r_km = positions(t_s)
    for station in sky.stations:
        mine = station.look_angles(r_km)
        alt, az, distance_km = sky.altaz(station, t_s)
        # Our Earth frame is GMST 1982 with UT1-UTC frozen at the epoch (~10 m from skyfield's).
        assert np.abs(mine.elevation_deg - alt).max() < 0.05
        np.testing.assert_allclose(mine.elevation_deg, station.elevation_deg(r_km), atol=1e-9)
        np.testing.assert_allclose(mine.range_km, distance_km, atol=0.05)
        visible = alt > 0.0  # azimuth: where it matters and is well defined (not overhead)
        visible &= alt < 85.0
        daz = (mine.azimuth_deg[visible] - az[visible] + 180.0) % 360.0 - 180.0
        assert np.abs(daz).max() < 0.05
        for i in np.flatnonzero(visible)[:5]:
            elevation, range_km = station.elevation_range_at(*r_km[i])
            assert elevation == pytest.approx(mine.elevation_deg[i], abs=1e-9)
            assert range_km == pytest.approx(mine.range_km[i], abs=1e-9)


def test_passes_match_skyfield_find_events(sky):
    found = passes(sky.stations, sky.propagator, 0.0, DAY_S)
    assert found == sorted(found, key=lambda p: (p.aos_s, p.station))
    for station in sky.stations:
        # Whole passes only: one cut by the window's ends lacks a rise or a set in find_events.
        mine = [p for p in found if p.station == station.name and 0.0 < p.aos_s and p.los_s < DAY_S]
        rises, culminations, sets = sky.events(station, 0.0, DAY_S)
        rises, sets = rises[rises < sets.max()], sets[sets > rises.min()]
        culminations = culminations[(culminations > rises.min()) & (culminations < sets.max())]
        assert len(mine) == len(rises) == len(sets) == len(culminations) >= 3, station.name
        for p, rise, culmination, set_ in zip(mine, rises, culminations, sets):
            assert abs(p.aos_s - rise) < 2.0 and abs(p.los_s - set_) < 2.0
            assert p.aos_s < p.tca_s < p.los_s
            assert abs(p.tca_s - culmination) < 2.0  # culminations are flat: skyfield's is to ~1 s
            alt_at_tca = sky.altaz(station, [p.tca_s])[0][0]
            assert p.max_elevation_deg == pytest.approx(alt_at_tca, abs=0.05)
            assert p.max_elevation_deg >= sky.altaz(station, [culmination])[0][0] - 0.01
            # At AOS and LOS the satellite is on the mask.
            alt_aos, alt_los = sky.altaz(station, [p.aos_s, p.los_s])[0]
            assert alt_aos == pytest.approx(station.min_elevation_deg, abs=0.05)
            assert alt_los == pytest.approx(station.min_elevation_deg, abs=0.05)


def test_presets_get_several_passes_a_day(sky):
    found = passes(sky.stations, sky.propagator, 0.0, DAY_S)
    for station in sky.stations:
        assert sum(p.station == station.name for p in found) >= 3, station.name
    assert sum(p.duration_s for p in found) > 1800.0  # at least half an hour a day in contact


def test_a_grazing_pass_between_coarse_samples_is_found():
    sky = Sky("starcloud1")
    station = sky.stations[0]
    low = min((p for p in passes([station], sky.propagator, 0.0, DAY_S) if p.max_elevation_deg > 12.0),
              key=lambda p: p.max_elevation_deg)
    # Raise the mask to just under the culmination: a pass of a few seconds, between 60 s samples.
    grazed = GroundStation(station.name, station.lat_deg, station.lon_deg, station.alt_m,
                           min_elevation_deg=low.max_elevation_deg - 0.02)
    window = (low.tca_s - 1800.0, low.tca_s + 1800.0)
    found = passes([grazed], sky.propagator, *window, step_s=60.0)
    assert len(found) == 1
    p = found[0]
    assert 0.0 < p.duration_s < 60.0
    rises, _, sets = sky.events(grazed, *window)
    assert len(rises) == len(sets) == 1
    assert abs(p.aos_s - rises[0]) < 2.0 and abs(p.los_s - sets[0]) < 2.0
    assert p.max_elevation_deg == pytest.approx(low.max_elevation_deg, abs=1e-3)


def test_coarse_and_fine_search_grids_agree():
    sky = Sky("dawn-dusk-650")
    fine = passes(sky.stations, sky.propagator, 0.0, DAY_S / 2, step_s=1.0)
    coarse = passes(sky.stations, sky.propagator, 0.0, DAY_S / 2, step_s=30.0)
    assert [p.station for p in coarse] == [p.station for p in fine]
    for a, b in zip(coarse, fine):
        assert a.aos_s == pytest.approx(b.aos_s, abs=0.01) and a.los_s == pytest.approx(b.los_s, abs=0.01)
        assert a.max_elevation_deg == pytest.approx(b.max_elevation_deg, abs=1e-4)


def test_a_window_cuts_a_pass_in_progress_at_its_ends():
    sky = Sky("starcloud1")
    whole = passes(sky.stations, sky.propagator, 0.0, DAY_S)[2]
    mid = 0.5 * (whole.aos_s + whole.los_s)
    station = [s for s in sky.stations if s.name == whole.station]
    (head,) = passes(station, sky.propagator, whole.aos_s - 600.0, mid)
    (tail,) = passes(station, sky.propagator, mid, whole.los_s + 600.0)
    assert head.aos_s == pytest.approx(whole.aos_s, abs=1e-3) and head.los_s == mid
    assert tail.aos_s == mid and tail.los_s == pytest.approx(whole.los_s, abs=1e-3)
    # Each part's culmination is its highest point inside it: the whole pass's, or the cut.
    for part in (head, tail):
        assert part.aos_s <= part.tca_s <= part.los_s
        assert part.max_elevation_deg <= whole.max_elevation_deg + 1e-6
    assert max(head.max_elevation_deg, tail.max_elevation_deg) == pytest.approx(whole.max_elevation_deg, abs=1e-6)


def test_predictor_windows_agree_with_one_long_search():
    sky = Sky("starcloud1")
    reference = passes(sky.stations, sky.propagator, -3600.0, 3 * DAY_S)
    predictor = PassPredictor(sky.propagator, sky.stations, window_s=12 * 3600.0, lookahead_s=6 * 3600.0)
    seen_next = []
    for t_s in np.arange(0.0, 2 * DAY_S, 20.0):
        upcoming = predictor.next_pass(t_s)
        assert upcoming is not None and upcoming.aos_s > t_s
        expected_next = next(p for p in reference if p.aos_s > t_s)
        assert upcoming.station == expected_next.station
        assert upcoming.aos_s == pytest.approx(expected_next.aos_s, abs=1e-3)
        active = predictor.passes_at(t_s)
        expected_active = [p for p in reference if p.aos_s <= t_s <= p.los_s]
        assert sorted(p.station for p in active) == sorted(p.station for p in expected_active)
        seen_next.append(upcoming.aos_s)
    assert predictor.windows_computed >= 2 * DAY_S / (6 * 3600.0) - 1
    # Every pass announced once, from whichever window saw it: none lost or doubled at the seams.
    last = seen_next[-1]
    assert sorted({round(a, 2) for a in seen_next}) == [round(p.aos_s, 2) for p in reference if 0.0 < p.aos_s <= last]


def test_in_view_reports_the_highest_station_and_its_elevation():
    sky = Sky("dawn-dusk-650")
    positions = earth_fixed_positions(sky.propagator)
    predictor = PassPredictor(sky.propagator, sky.stations)
    found = passes(sky.stations, sky.propagator, 0.0, DAY_S / 2)
    p = max(found, key=lambda q: q.max_elevation_deg)
    station, elevation, range_km = predictor.in_view(p.tca_s, positions(np.array([p.tca_s]))[0])
    assert station.name == p.station
    assert elevation == pytest.approx(p.max_elevation_deg, abs=1e-6)
    assert elevation == pytest.approx(sky.altaz(station, [p.tca_s])[0][0], abs=0.05)
    assert range_km == pytest.approx(sky.altaz(station, [p.tca_s])[2][0], abs=0.05)
    assert predictor.in_view(p.tca_s)[0].name == p.station  # the slow path, without a position
    assert predictor.in_view(p.los_s + 1.0) is None or predictor.in_view(p.los_s + 1.0)[0].name != p.station


@pytest.mark.parametrize("kwargs, fragment", [
    ({"lat_deg": 91.0}, "lat_deg must be a number in [-90, 90]"),
    ({"min_elevation_deg": -1.0}, "min_elevation_deg"),
    ({"alt_m": math.nan}, "alt_m"),
    ({"name": ""}, "name must be a non-empty str"),
])
def test_station_rejects_bad_values(kwargs, fragment):
    values = {"name": "x", "lat_deg": 10.0, "lon_deg": 20.0, **kwargs}
    with pytest.raises(ValueError) as excinfo:
        GroundStation(**values)
    assert fragment in str(excinfo.value)


def test_predictor_rejects_duplicate_names():
    sky = Sky("starcloud1")
    with pytest.raises(ValueError, match="'Wallops' appear twice"):
        PassPredictor(sky.propagator, [sky.stations[0], sky.stations[0]])
