"""The region map: well-known places, map properties, next_change against brute force, loading."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from flight.assistant.regions import (KINDS, Region, RegionChange, RegionMap, RegionMapError,
                                      phrase)


@pytest.fixture(scope="module")
def regions() -> RegionMap:
    return RegionMap.load()


# Places chosen from an atlas, each ~100 km or more from any coast and from the sea limits that the
# builder documents; the expected region follows from geography and the documented choices
# (Egypt west of Suez is Africa, Anatolia is Middle East, Russia splits on the Urals, ...).
PLACES = [
    ("Sahara, Niger/Libya", 23.0, 13.0, "Africa"),
    ("Kinshasa", -4.3, 15.3, "Africa"),
    ("Nairobi", -1.29, 36.82, "Africa"),
    ("Cairo (Egypt west of Suez)", 30.04, 31.24, "Africa"),
    ("Riyadh", 24.7, 46.7, "Middle East"),
    ("Tehran", 35.7, 51.4, "Middle East"),
    ("Baghdad", 33.3, 44.4, "Middle East"),
    ("Ankara (Anatolia)", 39.93, 32.86, "Middle East"),
    ("central Sinai", 29.6, 33.9, "Middle East"),
    ("Paris", 48.86, 2.35, "Europe"),
    ("Moscow (west of the Urals)", 55.75, 37.62, "Europe"),
    ("Edirne (East Thrace)", 41.67, 26.56, "Europe"),
    ("Novosibirsk (east of the Urals)", 55.03, 82.92, "Asia"),
    ("Beijing", 39.9, 116.4, "Asia"),
    ("Delhi", 28.61, 77.21, "Asia"),
    ("Ulaanbaatar", 47.9, 106.9, "Asia"),
    ("Alice Springs", -23.7, 133.88, "Australia"),
    ("Broken Hill", -31.95, 141.45, "Australia"),
    ("Mount Hagen, New Guinea", -5.86, 144.23, "Oceania"),
    ("Cordoba, Argentina", -31.4, -64.2, "South America"),
    ("Brasilia", -15.8, -47.9, "South America"),
    ("Manaus", -3.1, -60.0, "South America"),
    ("Denver", 39.74, -104.99, "North America"),
    ("Toronto", 43.65, -79.38, "North America"),
    ("Mexico City", 19.43, -99.13, "North America"),
    ("Tegucigalpa", 14.07, -87.19, "Central America"),
    ("central Nicaragua", 12.9, -85.3, "Central America"),
    ("Cordillera Central, Hispaniola", 19.0, -70.7, "Caribbean"),
    ("Greenland ice sheet", 72.0, -40.0, "Greenland"),
    ("South Pole", -90.0, 0.0, "Antarctica"),
    ("East Antarctic plateau", -80.0, 30.0, "Antarctica"),
    ("central Pacific", 0.0, -160.0, "Pacific Ocean"),
    ("North Pacific", 35.0, -150.0, "Pacific Ocean"),
    ("South Pacific", -30.0, -120.0, "Pacific Ocean"),
    ("Tasman Sea (Pacific)", -40.0, 160.0, "Pacific Ocean"),
    ("Bering Sea, east of 180", 55.0, -179.0, "Pacific Ocean"),
    ("Bering Sea, west of 180", 55.0, 179.0, "Pacific Ocean"),
    ("Drake Passage west of Cape Horn's meridian", -58.0, -75.0, "Pacific Ocean"),
    ("mid-Atlantic", 30.0, -40.0, "Atlantic Ocean"),
    ("South Atlantic", -30.0, -15.0, "Atlantic Ocean"),
    ("off the Cape, west of 20 E", -40.0, 10.0, "Atlantic Ocean"),
    ("Drake Passage east of Cape Horn's meridian", -58.0, -60.0, "Atlantic Ocean"),
    ("Norwegian Sea", 66.0, 0.0, "Atlantic Ocean"),
    ("Indian Ocean", -20.0, 80.0, "Indian Ocean"),
    ("south of Madagascar's latitude", -30.0, 60.0, "Indian Ocean"),
    ("off the Cape, east of 20 E", -40.0, 30.0, "Indian Ocean"),
    ("Great Australian Bight", -37.0, 130.0, "Indian Ocean"),
    ("Timor Sea", -11.5, 126.0, "Indian Ocean"),
    ("Arctic, near the pole", 85.0, 0.0, "Arctic Ocean"),
    ("North Pole", 90.0, 123.0, "Arctic Ocean"),
    ("Barents Sea", 75.0, 40.0, "Arctic Ocean"),
    ("Southern Ocean, Indian sector", -62.0, 100.0, "Southern Ocean"),
    ("Southern Ocean, Pacific sector", -65.0, -150.0, "Southern Ocean"),
    ("Ionian Sea", 35.0, 18.0, "Mediterranean Sea"),
    ("Caribbean Sea", 15.0, -75.0, "Caribbean Sea"),
    ("Red Sea", 20.0, 38.5, "Red Sea"),
    ("Gulf of Mexico", 25.0, -90.0, "Gulf of Mexico"),
    ("Black Sea", 43.0, 34.0, "Black Sea"),
    ("Caspian Sea", 42.0, 50.5, "Caspian Sea"),
    ("Persian Gulf", 27.0, 51.5, "Persian Gulf"),
    ("Gulf of Aden", 12.5, 48.0, "Gulf of Aden"),
    ("Arabian Sea", 15.0, 65.0, "Arabian Sea"),
    ("Bay of Bengal", 15.0, 88.0, "Bay of Bengal"),
    ("South China Sea", 12.0, 113.0, "South China Sea"),
    ("Hudson Bay", 60.0, -86.0, "Hudson Bay"),
    ("Baltic Sea", 56.0, 19.0, "Baltic Sea"),
    ("North Sea", 56.0, 3.0, "North Sea"),
]


@pytest.mark.parametrize("place, lat_deg, lon_deg, expected", PLACES, ids=[p[0] for p in PLACES])
def test_well_known_places(regions, place, lat_deg, lon_deg, expected):
    assert regions.region_at(lat_deg, lon_deg).name == expected


def test_kinds_and_phrases(regions):
    assert {r.kind for r in regions.regions} == set(KINDS)
    assert regions.by_name("Africa").kind == "continent"
    assert regions.by_name("Middle East").kind == "region"
    assert regions.by_name("Pacific Ocean").kind == "ocean"
    assert regions.by_name("Red Sea").kind == "sea"
    assert phrase(regions.by_name("Africa")) == "above Africa"
    assert phrase(regions.by_name("Antarctica")) == "above Antarctica"
    assert phrase(regions.by_name("Pacific Ocean")) == "over the Pacific Ocean"
    assert phrase(regions.by_name("Middle East")) == "over the Middle East"
    assert phrase(regions.by_name("Caribbean")) == "over the Caribbean"
    assert phrase(regions.by_name("Central America")) == "over Central America"
    assert phrase(regions.by_name("Hudson Bay")) == "over Hudson Bay"
    assert regions.by_name("Gulf of Mexico").spoken_name == "the Gulf of Mexico"
    here, there = regions.region_at(23, 13), regions.region_at(24.7, 46.7)
    sentence = f"I'm {phrase(here)}, I'll be {phrase(there)} in 20 minutes"
    assert sentence == "I'm above Africa, I'll be over the Middle East in 20 minutes"


def test_every_cell_has_a_region_and_every_region_a_cell(regions):
    raster = regions.raster
    assert raster.dtype == np.uint8 and raster.shape == (720, 1440)
    assert int(raster.max()) < len(regions.regions)
    assert set(np.unique(raster).tolist()) == set(range(len(regions.regions)))
    assert len({r.name for r in regions.regions}) == len(regions.regions)


def test_poles_and_latitude_bounds(regions):
    lon = np.linspace(-180, 180, 721)
    assert set(regions.regions_at(np.full_like(lon, 90.0), lon).tolist()) == {regions.by_name("Arctic Ocean").id}
    assert set(regions.regions_at(np.full_like(lon, -90.0), lon).tolist()) == {regions.by_name("Antarctica").id}
    for bad in (90.0001, -91.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lat_deg"):
            regions.region_at(bad, 0.0)
    with pytest.raises(ValueError, match="lon_deg"):
        regions.regions_at([0.0, 0.0], [0.0, float("nan")])


def test_longitude_wraps(regions):
    lat = np.linspace(-89.9, 89.9, 2000)
    assert np.array_equal(regions.regions_at(lat, -180.0), regions.regions_at(lat, 180.0))
    assert np.array_equal(regions.regions_at(lat, -180.0), regions.regions_at(lat, 540.0))


def _clear_of_cell_edges(lon: float) -> bool:
    # Near a cell edge lon and lon + 360 k may round into neighbouring cells; that is not a wrap bug.
    x = (lon + 180.0) / 0.25
    return abs(x - round(x)) > 1e-6


@settings(max_examples=200, deadline=None)
@given(lat=st.floats(-90, 90), lon=st.floats(-180, 180), turns=st.integers(-3, 3))
def test_longitude_wraps_anywhere(regions, lat, lon, turns):
    assume(_clear_of_cell_edges(lon))
    assert regions.region_at(lat, lon) == regions.region_at(lat, lon + 360.0 * turns)


@settings(max_examples=50, deadline=None)
@given(points=st.lists(st.tuples(st.floats(-90, 90), st.floats(-720, 720)), min_size=1, max_size=40))
def test_vectorized_matches_scalar(regions, points):
    lat, lon = np.array(points).T
    ids = regions.regions_at(lat, lon)
    assert ids.shape == lat.shape
    assert ids.tolist() == [regions.region_at(a, b).id for a, b in points]


def test_regions_at_broadcasts(regions):
    lat = np.array([[23.0], [0.0]])
    lon = np.array([13.0, -160.0])
    names = [[regions.name_of(i) for i in row] for row in regions.regions_at(lat, lon)]
    assert names[0][0] == "Africa" and names[1][1] == "Pacific Ocean"


def test_region_ids_and_names(regions):
    africa = regions.region_at(23.0, 13.0)
    assert regions.name_of(africa.id) == "Africa"
    assert regions.region(africa.id) == africa
    with pytest.raises(ValueError, match="region id"):
        regions.name_of(len(regions.regions))
    with pytest.raises(ValueError, match="no region named"):
        regions.by_name("Atlantis")


# ---- next_change ---------------------------------------------------------------------------

EARTH_RADIUS_KM = 6371.0
GROUND_SPEED_KM_S = 7.2      # LEO at ~325 km


def _unit(lat_deg, lon_deg):
    lat, lon = np.radians(lat_deg), np.radians(lon_deg)
    return np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])


def great_circle_track(start, end):
    """position_at(t) along the great circle from start to end at LEO ground speed, and its duration."""
    a, b = _unit(*start), _unit(*end)
    angle = np.arccos(np.clip(a @ b, -1, 1))
    rate = GROUND_SPEED_KM_S / EARTH_RADIUS_KM

    def position_at(t):
        f = np.asarray(t, dtype=float) * rate
        v = (np.sin(angle - f)[..., None] * a + np.sin(f)[..., None] * b) / np.sin(angle)
        return np.degrees(np.arcsin(v[..., 2])), np.degrees(np.arctan2(v[..., 1], v[..., 0]))

    return position_at, angle / rate


def brute_force_change(regions, position_at, t_end_s, min_dwell_s, step_s=0.25):
    """The definition, on a fine grid: first region other than the start one held for min_dwell_s."""
    t = np.arange(0.0, t_end_s, step_s)
    ids = regions.regions_at(*position_at(t))
    current = ids[0]
    i = 1
    while i < ids.size:
        if ids[i] != current:
            j = i
            while j < ids.size and ids[j] == ids[i]:
                j += 1
            if j < ids.size and t[j] - t[i] >= min_dwell_s:
                return regions.name_of(ids[i]), t[i]
            i = j
        else:
            i += 1
    return None


def test_africa_to_middle_east_against_brute_force(regions):
    position_at, duration_s = great_circle_track((15.0, 20.0), (30.0, 50.0))
    times = np.arange(0.0, duration_s, 10.0)
    lat, lon = position_at(times)
    assert regions.region_at(lat[0], lon[0]).name == "Africa"
    expected = brute_force_change(regions, position_at, duration_s, 60.0)
    # The Red Sea, at most ~355 km wide and crossed about square, takes well under 60 s at 7.2 km/s:
    # a flicker, so the next region is the Middle East.
    assert expected[0] == "Middle East"

    with_propagator = regions.next_change(times, lat, lon, 0, position_at=position_at, tol_s=0.5)
    assert isinstance(with_propagator, RegionChange)
    assert with_propagator.region.name == "Middle East"
    assert abs(with_propagator.time_s - expected[1]) <= 0.5 + 0.25

    from_samples = regions.next_change(times, lat, lon, 0)
    assert from_samples.region.name == "Middle East"
    assert abs(from_samples.time_s - expected[1]) <= 10.0

    no_filter = regions.next_change(times, lat, lon, 0, min_dwell_s=0.0, position_at=position_at)
    assert no_filter.region.name == "Red Sea"
    assert no_filter.time_s < with_propagator.time_s


def test_next_change_from_a_later_index(regions):
    position_at, duration_s = great_circle_track((15.0, 20.0), (30.0, 50.0))
    times = np.arange(0.0, duration_s, 10.0)
    lat, lon = position_at(times)
    in_middle_east = next(i for i in range(times.size)
                          if regions.region_at(lat[i], lon[i]).name == "Middle East")
    change = regions.next_change(times, lat, lon, in_middle_east)
    # What follows the Middle East on this track is the Persian Gulf, reached near the end of the
    # forecast; it is reported only if held for min_dwell_s before the forecast ends.
    expected = brute_force_change(regions, lambda t: position_at(np.asarray(t) + times[in_middle_east]),
                                  duration_s - times[in_middle_east], 60.0)
    if expected is None:
        assert change is None
    else:
        assert change.region.name == expected[0]


def synthetic_map():
    """1-degree map: 'Land' everywhere, a one-cell 'Isle' at 0-1 N 10-11 E, 'Sea' east of 20 E,
    and 'East' / 'West' on either side of the antimeridian in the southern hemisphere."""
    raster = np.zeros((180, 360), dtype=np.uint8)
    raster[90, 190] = 1                          # row 90: 0..1 N; col 190: 10..11 E
    raster[:, 200:] = 2                          # 20 E and east
    raster[:90, 340:] = 3                        # south, 160 E to 180
    raster[:90, :20] = 4                         # south, -180 to -160
    return RegionMap(raster, ["Land", "Isle", "Sea", "East", "West"],
                     ["continent", "region", "sea", "region", "region"], ["", "the", "the", "", ""],
                     cell_deg=1.0)


def test_flicker_is_ignored_and_time_is_refined():
    regions = synthetic_map()
    rate_deg_s = 0.05                            # the isle (1 deg) lasts 20 s; the sea starts at t = 400 s
    times = np.arange(0.0, 600.0, 10.0)
    lat = np.full_like(times, 0.5)
    lon = times * rate_deg_s
    change = regions.next_change(times, lat, lon, 0)
    assert change.region.name == "Sea"
    assert abs(change.time_s - 400.0) <= 1.0
    flicker = regions.next_change(times, lat, lon, 0, min_dwell_s=0.0)
    assert flicker.region.name == "Isle"
    assert abs(flicker.time_s - 200.0) <= 1.0
    exact = regions.next_change(times, lat, lon, 0, position_at=lambda t: (0.5, t * rate_deg_s), tol_s=0.01)
    assert abs(exact.time_s - 400.0) <= 0.01


def test_unconfirmed_change_at_the_end_of_the_forecast_is_not_reported():
    regions = synthetic_map()
    times = np.arange(0.0, 430.0, 10.0)          # enters the sea at 400 s, forecast ends at 420 s
    lat, lon = np.full_like(times, 0.5), times * 0.05
    after_the_isle = 30                          # t = 300 s
    assert regions.next_change(times, lat, lon, after_the_isle) is None
    assert regions.next_change(times, lat, lon, after_the_isle, min_dwell_s=20.0).region.name == "Sea"


def test_no_change_and_staying_in_one_region():
    regions = synthetic_map()
    times = np.arange(0.0, 1000.0, 10.0)
    assert regions.next_change(times, np.full_like(times, 45.0), np.full_like(times, -100.0), 0) is None
    assert regions.next_change(times[:1], [45.0], [-100.0], 0) is None


def test_refinement_takes_the_short_way_across_the_antimeridian():
    regions = synthetic_map()
    times = np.arange(0.0, 200.0, 10.0)
    lon = 175.0 + times * 0.2                    # crosses 180 at t = 25 s, between two samples
    lat = np.full_like(times, -30.0)
    lon = (lon + 180.0) % 360.0 - 180.0
    change = regions.next_change(times, lat, lon, 0, min_dwell_s=30.0, tol_s=0.1)
    assert change.region.name == "West"
    assert abs(change.time_s - 25.0) <= 0.1


def test_next_change_rejects_bad_forecasts():
    regions = synthetic_map()
    times = np.arange(0.0, 100.0, 10.0)
    lat, lon = np.zeros_like(times), np.zeros_like(times)
    with pytest.raises(ValueError, match="now_index"):
        regions.next_change(times, lat, lon, times.size)
    with pytest.raises(ValueError, match="increase"):
        regions.next_change(times[::-1], lat, lon, 0)
    with pytest.raises(ValueError, match="one length"):
        regions.next_change(times, lat[:-1], lon, 0)
    with pytest.raises(ValueError, match="finite"):
        regions.next_change(np.where(times == 50.0, np.nan, times), lat, lon, 0)


# ---- loading -------------------------------------------------------------------------------

def test_load_is_cached_and_carries_its_provenance(regions):
    assert RegionMap.load() is regions
    assert "Natural Earth" in regions.source
    assert regions.build["cell_deg"] == regions.cell_deg == 0.25
    from tools.build_regions import PINNED_SHA256
    assert regions.build["sha256"]["naturalearth_lowres.shp"] == PINNED_SHA256[".shp"]
    assert regions.build["sha256"]["naturalearth_lowres.dbf"] == PINNED_SHA256[".dbf"]


def test_load_from_a_path_and_corrupt_files(tmp_path, regions):
    packaged = Path(__file__).resolve().parents[2] / "flight" / "assistant" / "data" / "regions.npz"
    copy = tmp_path / "copy.npz"
    copy.write_bytes(packaged.read_bytes())
    assert np.array_equal(RegionMap.load(copy).raster, regions.raster)

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip at all")
    with pytest.raises(RegionMapError, match="garbage.npz"):
        RegionMap.load(garbage)
    with pytest.raises(RegionMapError, match="missing.npz"):
        RegionMap.load(tmp_path / "missing.npz")

    partial = tmp_path / "partial.npz"
    np.savez_compressed(partial, raster=regions.raster)
    with pytest.raises(RegionMapError, match="missing arrays"):
        RegionMap.load(partial)

    names = np.array([r.name for r in regions.regions][:-1])
    inconsistent = tmp_path / "inconsistent.npz"
    np.savez_compressed(inconsistent, raster=regions.raster, names=names, kinds=names, articles=names,
                        lat0_deg=-90.0, lon0_deg=-180.0, cell_deg=0.25, format_version=1)
    with pytest.raises(RegionMapError, match="kind"):
        RegionMap.load(inconsistent)


def test_shared_raster_is_read_only(regions):
    with pytest.raises(ValueError):
        regions.raster[0, 0] = 1


def test_map_rejects_ids_without_names():
    raster = np.full((180, 360), 3, dtype=np.uint8)
    with pytest.raises(RegionMapError, match="unique"):
        RegionMap(raster, ["A", "A", "B", "C"], ["continent"] * 4, [""] * 4, cell_deg=1.0)
    with pytest.raises(RegionMapError, match="region id 3"):
        RegionMap(raster, ["A"], ["continent"], [""], cell_deg=1.0)
    with pytest.raises(RegionMapError, match="globe"):
        RegionMap(raster[:90], ["A", "B", "C", "D"], ["continent"] * 4, [""] * 4, cell_deg=1.0)


LOAD_WITHOUT_NETWORK = textwrap.dedent("""
    import socket, sys, tracemalloc
    attempts = []
    def refuse(*args, **kwargs):
        attempts.append(repr(args[1:2]))
        raise OSError("network disabled by the test")
    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.getaddrinfo = refuse
    import numpy
    tracemalloc.start()
    from flight.assistant.regions import RegionMap, phrase
    regions = RegionMap.load()
    where = phrase(regions.region_at(24.7, 46.7))
    _, peak = tracemalloc.get_traced_memory()
    heavy = sorted(m for m in ("geopandas", "shapely", "pyproj", "matplotlib", "scipy", "torch")
                   if m in sys.modules)
    print(json.dumps({"attempts": attempts, "peak_bytes": peak, "where": where, "heavy": heavy}))
""").replace("import socket, sys, tracemalloc", "import json, socket, sys, tracemalloc")


def test_loads_without_network_in_bounded_memory():
    result = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_NETWORK], capture_output=True, text=True,
                            timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["attempts"] == []
    assert report["where"] == "over the Middle East"
    assert report["heavy"] == []
    assert report["peak_bytes"] < 10 * 2**20       # the raster is 1 MB; the target is < 10 MB


# ---- the builder's parts (the full build needs the geopandas wheel; see the last test) ------------

def test_rasterize_square_with_a_hole_by_even_odd():
    from tools.build_regions import N_COLS, N_ROWS, rasterize_rings
    outer = np.array([[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]], dtype=float)
    hole = np.array([[2, 2], [2, 8], [8, 8], [8, 2], [2, 2]], dtype=float)
    mask = rasterize_rings([outer, hole])
    assert mask.shape == (N_ROWS, N_COLS)
    # 0.25 deg cells: 40 x 40 in the square, 24 x 24 in the hole.
    assert mask.sum() == 40 * 40 - 24 * 24
    row, col = int((5 + 90) / 0.25), int((5 + 180) / 0.25)
    assert not mask[row, col] and mask[row, col - 16]


def test_rasterize_polygon_across_the_antimeridian():
    from tools.build_regions import polygon_mask
    mask = polygon_mask([(0.0, 170.0), (10.0, 170.0), (10.0, 190.0), (0.0, 190.0)])
    assert mask.sum() == 40 * 80
    assert mask[int(95 / 0.25), 0] and mask[int(95 / 0.25), -1]


def test_npz_writer_is_byte_reproducible(tmp_path):
    from tools.build_regions import write_npz
    arrays = {"raster": np.arange(12, dtype=np.uint8).reshape(3, 4), "names": np.array(["a", "bc"]),
              "cell_deg": np.float64(0.25)}
    write_npz(tmp_path / "a.npz", arrays)
    write_npz(tmp_path / "b.npz", dict(reversed(list(arrays.items()))))
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz", allow_pickle=False) as data:
        assert np.array_equal(data["raster"], arrays["raster"]) and data["names"].tolist() == ["a", "bc"]


@pytest.mark.skipif(not os.environ.get("SUNLIT_GEOPANDAS_WHEEL"),
                    reason="set SUNLIT_GEOPANDAS_WHEEL to the geopandas 0.14.4 wheel to rebuild the map")
def test_rebuild_is_byte_identical_to_the_shipped_map(tmp_path):
    from tools.build_regions import build
    out = tmp_path / "regions.npz"
    build(Path(os.environ["SUNLIT_GEOPANDAS_WHEEL"]), out)
    packaged = Path(__file__).resolve().parents[2] / "flight" / "assistant" / "data" / "regions.npz"
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(packaged.read_bytes()).digest()
