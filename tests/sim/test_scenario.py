"""Scenario loading: presets by name, files by path, and errors that name the key."""

import math
from datetime import datetime, timezone

import pytest

from sim.constants import MU_EARTH_KM3_S2, R_EARTH_EQUATORIAL_KM, J2
from sim.scenario import ScenarioError, load_scenario, parse_scenario, preset_names

ISS_TLE = [
    "1 25544U 98067A   25306.50000000  .00016717  00000-0  30000-3 0  9999",
    "2 25544  51.6400 120.0000 0003000  80.0000 280.0000 15.50000000    03",
]


def minimal(**overrides):
    data = {
        "orbit": {"altitude_km": 500.0, "inclination_deg": 53.0, "epoch_utc": "2026-01-01T00:00:00Z"},
        "solar_array": {"area_m2": 2.0, "cell_efficiency": 0.3},
        "battery": {"capacity_wh": 500.0, "max_charge_w": 300.0, "max_discharge_w": 600.0},
        "bus_load": {"power_w": 100.0},
    }
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        data.setdefault(section, {})[key] = value
    return data


def test_presets_are_listed_and_load_by_name():
    assert {"starcloud1", "dawn-dusk-650"} <= set(preset_names())
    for name in preset_names():
        scenario = load_scenario(name)
        assert scenario.name == name


def test_starcloud1_matches_the_mission():
    s = load_scenario("starcloud1")
    assert 300 <= s.orbit["altitude_km"] <= 350
    assert 40 <= s.orbit["inclination_deg"] <= 50
    assert s.epoch_utc.date() == datetime(2025, 11, 2).date()
    assert s.battery["dod_limit"] == pytest.approx(0.30)


def test_dawn_dusk_650_is_sun_synchronous():
    s = load_scenario("dawn-dusk-650")
    a_km = R_EARTH_EQUATORIAL_KM + s.orbit["altitude_km"]
    n_rad_s = math.sqrt(MU_EARTH_KM3_S2 / a_km**3)
    # J2 nodal regression must match the sun's mean motion (360 deg per tropical year).
    node_rate = -1.5 * n_rad_s * J2 * (R_EARTH_EQUATORIAL_KM / a_km) ** 2 * math.cos(math.radians(s.orbit["inclination_deg"]))
    assert node_rate == pytest.approx(2 * math.pi / (365.2422 * 86400), rel=0.01)
    assert abs(s.orbit["altitude_km"] - 650) < 25


def test_file_path_loads(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(load_scenario_text("starcloud1").replace('name = "starcloud1"', 'name = "mine"'))
    assert load_scenario(path).name == "mine"


def load_scenario_text(name):
    from importlib import resources

    return (resources.files("sim") / "scenarios" / f"{name}.toml").read_text()


def test_defaults_fill_in():
    s = parse_scenario(minimal())
    assert s.battery["dod_limit"] == 0.30
    assert s.gpu["max_cap_w"] == 700.0
    assert s.epoch_utc == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert s.soc_floor == pytest.approx(0.70)


@pytest.mark.parametrize("overrides, fragment", [
    ({"battery__capacity_wh": -5.0}, "[battery] capacity_wh must be > 0"),
    ({"battery__capacity_wh": "big"}, "[battery] capacity_wh must be a number"),
    ({"battery__capcity_wh": 5.0}, "[battery] unknown key 'capcity_wh'"),
    ({"orbit__inclination_deg": 200.0}, "[orbit] inclination_deg must be <= 180"),
    ({"orbit__epoch_utc": "yesterday"}, "epoch_utc must be an ISO 8601 UTC time"),
    ({"simulation__step_s": 1.5}, "[simulation] step_s must be an integer"),
    ({"gpu__min_cap_w": 50.0}, "[gpu] needs idle_power_w < min_cap_w"),
    ({"battery__initial_soc": 0.5}, "below the DoD floor"),
    ({"orbit__tle": ISS_TLE}, "give either tle or elements"),
])
def test_errors_name_the_key(overrides, fragment):
    with pytest.raises(ScenarioError) as excinfo:
        parse_scenario(minimal(**overrides))
    assert fragment in str(excinfo.value)


def test_missing_section_and_key_are_named():
    data = minimal()
    del data["battery"]
    with pytest.raises(ScenarioError, match=r"missing section \[battery\]"):
        parse_scenario(data)
    data = minimal()
    del data["orbit"]["altitude_km"]
    with pytest.raises(ScenarioError, match=r"\[orbit\] altitude_km is required"):
        parse_scenario(data)


def test_tle_orbit_takes_the_tle_epoch():
    data = minimal()
    data["orbit"] = {"tle": ISS_TLE}
    s = parse_scenario(data)
    # Day 306.5 of 2025 = 2 November 2025, 12:00 UTC.
    assert s.epoch_utc == datetime(2025, 11, 2, 12, 0, tzinfo=timezone.utc)


def test_bad_tle_is_a_scenario_error():
    data = minimal()
    data["orbit"] = {"tle": ["1 garbage", "2 garbage"], "epoch_utc": "2026-01-01T00:00:00Z"}
    with pytest.raises(ScenarioError, match=r"\[orbit\] tle"):
        parse_scenario(data)


def test_invalid_toml_and_unknown_preset(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[orbit\naltitude_km = 3")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'"):
        load_scenario("nope")


# --------------------------------------------------------------------------- [ground]

def with_stations(*stations, **ground):
    data = minimal()
    data["ground"] = {"stations": list(stations), **ground}
    return data


SVALBARD = {"name": "Svalbard", "lat_deg": 78.23, "lon_deg": 15.39}


def test_ground_is_optional_and_defaults_fill_in():
    s = parse_scenario(minimal())
    assert s.ground_stations == []
    assert s.downlink_rate_bps == 1_000_000.0
    s = parse_scenario(with_stations(SVALBARD, downlink_rate_bps=2e6))
    assert s.ground_stations == [{"name": "Svalbard", "lat_deg": 78.23, "lon_deg": 15.39, "alt_m": 0.0,
                                  "min_elevation_deg": 10.0}]
    assert s.downlink_rate_bps == 2e6


def test_presets_list_their_ground_stations():
    for name in preset_names():
        s = load_scenario(name)
        assert 2 <= len(s.ground_stations) <= 4
        assert s.downlink_rate_bps > 0


@pytest.mark.parametrize("ground, fragment", [
    ({"stations": [SVALBARD], "downlink_rate_bps": 0.0}, "[ground] downlink_rate_bps must be > 0"),
    ({"stations": [SVALBARD], "rate_bps": 1.0}, "[ground] unknown key 'rate_bps'"),
    ({"stations": {"name": "x"}}, "[ground] stations must be a list"),
    ({"stations": ["Svalbard"]}, "[[ground.stations]] #1 must be a table"),
    ({"stations": [{**SVALBARD, "lat": 1.0}]}, "[[ground.stations]] #1 ('Svalbard') unknown key 'lat'"),
    ({"stations": [{**SVALBARD, "lat_deg": 91.0}]}, "[[ground.stations]] #1 ('Svalbard') lat_deg must be <= 90"),
    ({"stations": [{**SVALBARD, "lon_deg": -181.0}]}, "[[ground.stations]] #1 ('Svalbard') lon_deg must be >= -180"),
    ({"stations": [{**SVALBARD, "lon_deg": "15E"}]}, "[[ground.stations]] #1 ('Svalbard') lon_deg must be a number"),
    ({"stations": [{**SVALBARD, "min_elevation_deg": 90.0}]}, "min_elevation_deg must be <= 89"),
    ({"stations": [{"lat_deg": 1.0, "lon_deg": 2.0}]}, "[[ground.stations]] #1 name is required"),
    ({"stations": [{**SVALBARD, "name": 7}]}, "[[ground.stations]] #1 name must be a str"),
    ({"stations": [{**SVALBARD, "name": ""}]}, "[[ground.stations]] #1 name must not be empty"),
    ({"stations": [{"name": "A", "lon_deg": 2.0}]}, "[[ground.stations]] #1 ('A') lat_deg is required"),
    ({"stations": [SVALBARD, {**SVALBARD, "lat_deg": 0.0}]},
     "[[ground.stations]] #2 ('Svalbard') name 'Svalbard' is used by an earlier station"),
])
def test_ground_errors_name_the_key(ground, fragment):
    data = minimal()
    data["ground"] = ground
    with pytest.raises(ScenarioError) as excinfo:
        parse_scenario(data)
    assert fragment in str(excinfo.value)


def test_ground_stations_load_from_toml(tmp_path):
    path = tmp_path / "ground.toml"
    path.write_text(load_scenario_text("starcloud1").split("[ground]")[0] + (
        "[ground]\ndownlink_rate_bps = 4_300_000\n\n"
        "[[ground.stations]]\nname = \"Svalbard\"\nlat_deg = 78.23\nlon_deg = 15.39\nalt_m = 500\n\n"
        "[[ground.stations]]\nname = \"Troll\"\nlat_deg = -72.01\nlon_deg = 2.53\nmin_elevation_deg = 5\n"))
    s = load_scenario(path)
    assert [st["name"] for st in s.ground_stations] == ["Svalbard", "Troll"]
    assert s.ground_stations[0]["alt_m"] == 500.0 and s.ground_stations[1]["min_elevation_deg"] == 5.0
    assert s.downlink_rate_bps == 4.3e6
