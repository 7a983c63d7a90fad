"""Where the satellite is, in words: the region map behind "I'm above Africa, I'll be over the
Middle East in 20 minutes".

The map is a 0.25 deg raster of region ids (continents, named regions such as the Middle East,
oceans, a few seas) built on the ground by tools/build_regions.py from Natural Earth and shipped
as flight/assistant/data/regions.npz (~16 kB, 1 MB in memory). Nothing here touches the network
or any geodata library: numpy only.

    regions = RegionMap.load()
    here = regions.region_at(24.7, 46.7)             # Region("Middle East", "region", "the", ...)
    phrase(here)                                      # "over the Middle East"
    change = regions.next_change(times_s, lat_deg, lon_deg, now_index)
    if change:                                        # RegionChange(region, time_s)
        minutes = (change.time_s - times_s[now_index]) / 60

Accuracy: a cell takes the region at its centre, so a position is answered as if it were up to
0.18 deg (~20 km) away; the 1:110m coastlines themselves are generalised by ~10-30 km, and the
sea limits are straight lines between IHO points. At LEO ground speed (~7 km/s) that is a few
seconds of track, well inside the assistant's +-1 minute.
"""

from __future__ import annotations

import functools
import json
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

FORMAT_VERSION = 1
KINDS = ("continent", "region", "ocean", "sea")
ARTICLES = ("", "the")
DEFAULT_MIN_DWELL_S = 60.0
DEFAULT_TOL_S = 1.0
REQUIRED_KEYS = ("raster", "names", "kinds", "articles", "lat0_deg", "lon0_deg", "cell_deg", "format_version")


class RegionMapError(ValueError):
    """The region map is missing, corrupt or inconsistent; the message names what is wrong."""


@dataclass(frozen=True)
class Region:
    name: str
    kind: str          # "continent" | "region" | "ocean" | "sea"
    article: str = ""  # "the" for "the Middle East", "the Pacific Ocean"; "" for "Africa"
    id: int = -1

    @property
    def spoken_name(self) -> str:
        """The name as it sits in a sentence: "the Middle East", "Africa", "Hudson Bay"."""
        return f"{self.article} {self.name}" if self.article else self.name


def phrase(region: Region) -> str:
    """"above Africa" for a continent; "over the Pacific Ocean", "over the Middle East" otherwise."""
    preposition = "above" if region.kind == "continent" else "over"
    return f"{preposition} {region.spoken_name}"


class RegionChange(NamedTuple):
    region: Region    # the region entered
    time_s: float     # when, in the forecast's time base


def _finite(values: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what} must be finite numbers (got NaN or infinity)")


class RegionMap:
    """A global raster of region ids: row 0 at the south pole edge, column 0 at -180 deg."""

    def __init__(self, raster: np.ndarray, names, kinds, articles, *, cell_deg: float,
                 lat0_deg: float = -90.0, lon0_deg: float = -180.0, source: str = "",
                 build: dict | None = None):
        raster = np.asarray(raster)
        names, kinds, articles = (list(map(str, np.asarray(a).ravel())) for a in (names, kinds, articles))
        if raster.dtype != np.uint8 or raster.ndim != 2:
            raise RegionMapError(f"raster must be a 2-D uint8 array, got {raster.dtype} with {raster.ndim} dims")
        if not (len(names) == len(kinds) == len(articles)) or not names:
            raise RegionMapError(f"names, kinds and articles must have one entry per region "
                                 f"(got {len(names)}, {len(kinds)}, {len(articles)})")
        if len(set(names)) != len(names):
            repeated = sorted(n for n in set(names) if names.count(n) > 1)
            raise RegionMapError(f"region names must be unique, got {repeated} more than once")
        bad_kind = next((k for k in kinds if k not in KINDS), None)
        if bad_kind is not None:
            raise RegionMapError(f"kind {bad_kind!r} is not one of {KINDS}")
        bad_article = next((a for a in articles if a not in ARTICLES), None)
        if bad_article is not None:
            raise RegionMapError(f"article {bad_article!r} is not one of {ARTICLES}")
        if not (np.isfinite(cell_deg) and cell_deg > 0):
            raise RegionMapError(f"cell_deg must be positive, got {cell_deg}")
        expected = (round(180 / cell_deg), round(360 / cell_deg))
        if (lat0_deg, lon0_deg) != (-90.0, -180.0) or raster.shape != expected:
            raise RegionMapError(f"the grid must cover the globe from (-90, -180) in {cell_deg} deg cells: "
                                 f"expected shape {expected}, got {raster.shape} from ({lat0_deg}, {lon0_deg})")
        if int(raster.max()) >= len(names):
            raise RegionMapError(f"raster holds region id {int(raster.max())} "
                                 f"but only {len(names)} regions are named")
        # A read-only view: the cached map is shared by every caller in the process.
        self.raster = raster.view()
        self.raster.flags.writeable = False
        self.cell_deg = float(cell_deg)
        self.lat0_deg = float(lat0_deg)
        self.lon0_deg = float(lon0_deg)
        self.source = source
        self.build = build or {}
        self.regions = tuple(Region(n, k, a, i) for i, (n, k, a) in enumerate(zip(names, kinds, articles)))
        self._by_name = {r.name: r for r in self.regions}

    # ---- loading ------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path | None = None) -> RegionMap:
        """The packaged map (default) or the one at path; loaded once per path and cached."""
        return _load_cached(None if path is None else str(Path(path).resolve()))

    @classmethod
    def from_npz(cls, file) -> RegionMap:
        try:
            with np.load(file, allow_pickle=False) as data:
                missing = [k for k in REQUIRED_KEYS if k not in data.files]
                if missing:
                    raise RegionMapError(f"region map {file}: missing arrays {missing}")
                version = int(data["format_version"])
                if version != FORMAT_VERSION:
                    raise RegionMapError(f"region map {file}: format_version {version}, expected {FORMAT_VERSION}")
                build = json.loads(str(data["build"])) if "build" in data.files else {}
                return cls(data["raster"], data["names"], data["kinds"], data["articles"],
                           cell_deg=float(data["cell_deg"]), lat0_deg=float(data["lat0_deg"]),
                           lon0_deg=float(data["lon0_deg"]),
                           source=str(data["source"]) if "source" in data.files else "", build=build)
        except RegionMapError:
            raise
        except (OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError, TypeError) as exc:
            raise RegionMapError(f"region map {file}: unreadable ({type(exc).__name__}: {exc})") from exc

    # ---- lookups ------------------------------------------------------------------------------

    def regions_at(self, lat_deg, lon_deg) -> np.ndarray:
        """Region ids (uint8) at the given points; arrays broadcast. Longitude wraps; lat in [-90, 90]."""
        lat = np.asarray(lat_deg, dtype=np.float64)
        lon = np.asarray(lon_deg, dtype=np.float64)
        _finite(lat, "lat_deg")
        _finite(lon, "lon_deg")
        if np.any(np.abs(lat) > 90.0):
            raise ValueError(f"lat_deg must lie in [-90, 90], got {lat[np.abs(lat) > 90.0].ravel()[0]}")
        n_rows, n_cols = self.raster.shape
        rows = np.clip(np.floor((lat - self.lat0_deg) / self.cell_deg).astype(np.intp), 0, n_rows - 1)
        # mod before the cast, so that any finite longitude fits; the last % folds 360.0 onto column 0.
        cols = np.floor(np.mod(lon - self.lon0_deg, 360.0) / self.cell_deg).astype(np.intp) % n_cols
        return self.raster[rows, cols]

    def region_at(self, lat_deg: float, lon_deg: float) -> Region:
        ids = self.regions_at(lat_deg, lon_deg)
        if ids.ndim != 0:
            raise ValueError("region_at takes one point; use regions_at for arrays")
        return self.regions[int(ids)]

    def region(self, region_id: int) -> Region:
        if not 0 <= int(region_id) < len(self.regions):
            raise ValueError(f"region id {region_id} is not in 0..{len(self.regions) - 1}")
        return self.regions[int(region_id)]

    def name_of(self, region_id: int) -> str:
        return self.region(region_id).name

    def by_name(self, name: str) -> Region:
        try:
            return self._by_name[name]
        except KeyError:
            raise ValueError(f"no region named {name!r}") from None

    # ---- forecasts ----------------------------------------------------------------------------

    def next_change(self, times_s, lat_deg, lon_deg, now_index: int, *,
                    min_dwell_s: float = DEFAULT_MIN_DWELL_S,
                    position_at: Callable[[float], tuple[float, float]] | None = None,
                    tol_s: float = DEFAULT_TOL_S) -> RegionChange | None:
        """The first region after now_index, on a forecast ground track, that differs from the
        current one and that the track stays in for at least min_dwell_s; None if there is none.

        Flickers: a region the track leaves again within min_dwell_s (a one-cell island, a
        coastline the track grazes) is not a change. Dwell is measured on the samples, from the
        first sample in the region to the first sample out of it, so it is known within one step;
        a region still held at the end of the forecast counts only once held for min_dwell_s.

        Time: the crossing between the last sample before the region and the first one in it is
        found by bisection to within tol_s, on position_at(t) -> (lat_deg, lon_deg) if given (the
        orbit propagator), else on a straight line between the two samples (longitude unwrapped).
        The answer always lies between those two samples, so it is right within one step even if
        the track bends: a 10-30 s step meets the assistant's +-1 minute with room to spare.
        """
        times = np.asarray(times_s, dtype=np.float64)
        lat = np.asarray(lat_deg, dtype=np.float64)
        lon = np.asarray(lon_deg, dtype=np.float64)
        if times.ndim != 1 or lat.shape != times.shape or lon.shape != times.shape:
            raise ValueError(f"times_s, lat_deg and lon_deg must be 1-D and of one length "
                             f"(got shapes {times.shape}, {lat.shape}, {lon.shape})")
        _finite(times, "times_s")
        if np.any(np.diff(times) <= 0):
            raise ValueError("times_s must increase strictly")
        if not 0 <= now_index < times.size:
            raise ValueError(f"now_index {now_index} is outside the forecast (0..{times.size - 1})")
        if not min_dwell_s >= 0 or not tol_s > 0:
            raise ValueError(f"min_dwell_s must be >= 0 and tol_s > 0 (got {min_dwell_s}, {tol_s})")
        times, lat, lon = times[now_index:], lat[now_index:], lon[now_index:]
        ids = self.regions_at(lat, lon)
        current = ids[0]
        starts = np.flatnonzero(np.diff(ids)) + 1
        ends = np.append(starts[1:], ids.size)
        for start, end in zip(starts, ends):
            entered = ids[start]
            if entered == current:
                continue
            held_s = times[end] - times[start] if end < ids.size else times[-1] - times[start]
            if held_s < min_dwell_s:
                continue
            if position_at is None:
                position_at = _straight_line(times[start - 1], times[start], lat[start - 1:start + 1],
                                             lon[start - 1:start + 1])
            time_s = self._crossing(times[start - 1], times[start], int(entered), position_at, tol_s)
            return RegionChange(self.regions[int(entered)], time_s)
        return None

    def _crossing(self, before_s: float, inside_s: float, region_id: int,
                  position_at: Callable[[float], tuple[float, float]], tol_s: float) -> float:
        """Bisection for the first time in (before_s, inside_s] at which the track is in the region."""
        lo, hi = float(before_s), float(inside_s)
        while hi - lo > tol_s:
            mid = 0.5 * (lo + hi)
            lat_mid, lon_mid = position_at(mid)
            if int(self.regions_at(lat_mid, lon_mid)) == region_id:
                hi = mid
            else:
                lo = mid
        return hi


def _straight_line(t0: float, t1: float, lat_pair: np.ndarray, lon_pair: np.ndarray):
    """Position between two samples, linear in time; the longitude step taken the short way round."""
    dlon = (lon_pair[1] - lon_pair[0] + 180.0) % 360.0 - 180.0

    def position_at(t: float) -> tuple[float, float]:
        f = (t - t0) / (t1 - t0)
        return lat_pair[0] + f * (lat_pair[1] - lat_pair[0]), lon_pair[0] + f * dlon

    return position_at


@functools.lru_cache(maxsize=4)
def _load_cached(path: str | None) -> RegionMap:
    if path is not None:
        return RegionMap.from_npz(path)
    packaged = resources.files(__package__) / "data" / "regions.npz"
    try:
        with resources.as_file(packaged) as real_path:
            return RegionMap.from_npz(real_path)
    except FileNotFoundError as exc:
        raise RegionMapError(f"the packaged region map {packaged} is missing: {exc}") from exc
