"""The sim radio: contact, station, elevation and the next pass, read from the stepped world."""

from __future__ import annotations

import numpy as np
import pytest
from skyfield.api import EarthSatellite, wgs84

from hal.sim_radio import SimRadio
from sim.ephemeris import timescale
from sim.ground_stations import GroundStation, earth_fixed_positions, passes, stations_from_config
from sim.world import World
from tests.conftest import scenario_with

DAY_S = 86400.0


def fly(world: World, radio: SimRadio, duration_s: float) -> list[tuple[int, dict]]:
    readings = [(world.t_s, radio.read())]
    while world.t_s < duration_s:
        world.step()
        readings.append((world.t_s, radio.read()))
    return readings


@pytest.fixture(scope="module")
def day():
    """A day of starcloud1 at 10 s steps (the radio does not care about the step)."""
    scenario = scenario_with("starcloud1", simulation={"step_s": 10})
    world = World(scenario)
    radio = SimRadio(world)
    readings = fly(world, radio, DAY_S)
    stations = stations_from_config(scenario.ground_stations)
    reference = passes(stations, world.orbit.propagator, -3600.0, 2 * DAY_S, step_s=1.0)
    return scenario, world, radio, readings, stations, reference


def test_contact_follows_the_predicted_passes(day):
    scenario, _, _, readings, _, reference = day
    for t_s, body in readings:
        in_view = [p for p in reference if p.aos_s <= t_s <= p.los_s]
        assert body["in_contact"] == bool(in_view), t_s
        if in_view:
            assert body["station"] in {p.station for p in in_view}
            assert body["downlink_rate_bps"] == scenario.downlink_rate_bps
            assert min(abs(body["los_s"] - p.los_s) for p in in_view) < 1e-3
        else:
            assert body["station"] == "" and body["downlink_rate_bps"] == 0.0
            assert body["elevation_deg"] is None and body["range_km"] is None
        upcoming = next(p for p in reference if p.aos_s > t_s)
        assert body["next_aos_s"] == pytest.approx(upcoming.aos_s, abs=1e-3)
        assert body["next_aos_in_s"] == pytest.approx(upcoming.aos_s - t_s, abs=1e-3)
        assert body["next_station"] == upcoming.station


def test_several_contacts_a_day_each_counted_once(day):
    _, _, radio, readings, _, reference = day
    # Passes with at least one 10 s sample inside them.
    sampled = [p for p in reference if any(p.aos_s <= t <= p.los_s for t, _ in readings)]
    assert radio.contacts == len(sampled) >= 10
    assert readings[-1][1]["contacts"] == radio.contacts


def test_elevation_and_range_match_skyfield(day):
    _, world, _, readings, stations, _ = day
    by_name = {s.name: s for s in stations}
    ts = timescale()
    t0 = ts.from_datetime(world.epoch_utc)
    satellite = EarthSatellite.from_satrec(world.orbit.propagator.satrec, ts)
    in_contact = [(t, b) for t, b in readings if b["in_contact"]]
    assert len(in_contact) > 100
    for t_s, body in in_contact[::10]:
        station = by_name[body["station"]]
        topos = wgs84.latlon(station.lat_deg, station.lon_deg, elevation_m=station.alt_m)
        alt, _, distance = (satellite - topos).at(ts.tai_jd(t0.whole, t0.tai_fraction + t_s / DAY_S)).altaz()
        assert body["elevation_deg"] == pytest.approx(alt.degrees, abs=0.05)
        assert body["elevation_deg"] >= station.min_elevation_deg - 1e-6
        assert body["range_km"] == pytest.approx(distance.km, abs=0.05)


def test_the_highest_station_wins_when_two_see_the_satellite():
    scenario = scenario_with("dawn-dusk-650", simulation={"step_s": 10})
    world = World(scenario)
    # Two stations 300 km apart see the same passes; the radio reports the higher one.
    north = GroundStation("north", 78.2, 15.4)
    south = GroundStation("south", 75.5, 15.4)
    radio = SimRadio(world, [north, south], downlink_rate_bps=2e6)
    positions = earth_fixed_positions(world.orbit.propagator)
    both = 0
    for t_s, body in fly(world, radio, 8 * 3600.0):
        if not body["in_contact"]:
            continue
        assert body["downlink_rate_bps"] == 2e6
        active = radio.predictor.passes_at(float(t_s))
        if len(active) == 2:
            both += 1
            r_km = positions(np.array([float(t_s)]))
            elevations = {s.name: float(s.elevation_deg(r_km)[0]) for s in (north, south)}
            assert body["station"] == max(elevations, key=elevations.get)
            assert body["elevation_deg"] == pytest.approx(max(elevations.values()), abs=1e-3)
    assert both > 10


def test_no_stations_means_never_in_contact():
    world = World(scenario_with("starcloud1", simulation={"step_s": 60}))
    radio = SimRadio(world, stations=[])
    for _, body in fly(world, radio, 3 * 3600.0):
        assert not body["in_contact"] and body["next_aos_s"] is None and body["next_station"] == ""
    assert radio.command_handlers() == {}
