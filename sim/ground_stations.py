"""Ground stations: where they are, how they see the satellite, and when it passes over them.

Look angles are computed in the Earth-fixed frame of sim.geodesy (PEF: TEME rotated by GMST 1982,
polar motion ignored) against each station's WGS84 local horizon (east, north, geodetic up); no
atmospheric refraction. A pass is an interval where the elevation is at or above the station's
mask. Pass prediction samples the orbit on a coarse grid (10 s by default) with the same batched
SGP4 and Earth rotation as the world's track, then refines every horizon crossing and culmination
on successively finer grids around it, so AOS, LOS and TCA come out to well under a second and the
maximum elevation to ~1e-6 deg of the model; culminations that stay between coarse samples (a
grazing pass) are refined too, so a short pass above the mask is not lost between samples.
``PassPredictor`` keeps a rolling window of predicted passes (like sim.track_buffer does for umbra)
so that a radio backend answers "who is in view now, and who is next" with a bisect per tick.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from sim.constants import R_EARTH_EQUATORIAL_KM, WGS84_ECCENTRICITY_SQ
from sim.geodesy import gmst_rad, teme_to_ecef_km
from sim.orbit import OrbitPropagator

# Earth-fixed (N,3) km positions at sim times (N,) s.
PositionFn = Callable[[np.ndarray], np.ndarray]

# Refinement grids: each round splits the bracket into this many parts (a 10 s bracket is
# 0.6 ms wide after three rounds); culminations take more rounds to shrink a two-step bracket.
_SPLITS = 16
_CROSSING_ROUNDS = 3
_MAXIMUM_ROUNDS = 6


def geodetic_to_ecef_km(lat_deg, lon_deg, alt_km) -> np.ndarray:
    """WGS84 geodetic (deg, deg, km) to Earth-fixed (...,3) km: the inverse of geodesy.ecef_to_geodetic."""
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    lon = np.radians(np.asarray(lon_deg, dtype=np.float64))
    h = np.asarray(alt_km, dtype=np.float64)
    sin_lat = np.sin(lat)
    n = R_EARTH_EQUATORIAL_KM / np.sqrt(1.0 - WGS84_ECCENTRICITY_SQ * sin_lat * sin_lat)
    out = np.empty(np.broadcast(lat, lon, h).shape + (3,))
    out[..., 0] = (n + h) * np.cos(lat) * np.cos(lon)
    out[..., 1] = (n + h) * np.cos(lat) * np.sin(lon)
    out[..., 2] = (n * (1.0 - WGS84_ECCENTRICITY_SQ) + h) * sin_lat
    return out


def geodetic_to_ecef_km_scalar(lat_deg: float, lon_deg: float, alt_km: float) -> tuple[float, float, float]:
    """Same as geodetic_to_ecef_km for one point, in plain floats (~1 µs, for per-tick use)."""
    lat, lon = math.radians(lat_deg), math.radians(lon_deg)
    sin_lat, cos_lat = math.sin(lat), math.cos(lat)
    n = R_EARTH_EQUATORIAL_KM / math.sqrt(1.0 - WGS84_ECCENTRICITY_SQ * sin_lat * sin_lat)
    return ((n + alt_km) * cos_lat * math.cos(lon), (n + alt_km) * cos_lat * math.sin(lon),
            (n * (1.0 - WGS84_ECCENTRICITY_SQ) + alt_km) * sin_lat)


def earth_fixed_positions(propagator: OrbitPropagator) -> PositionFn:
    """Earth-fixed positions from one SGP4 batch and one GMST evaluation per call (no skyfield per time)."""

    def positions(t_s: np.ndarray) -> np.ndarray:
        times = np.asarray(t_s, dtype=np.float64)
        r_teme_km, _ = propagator.propagate_teme(times)
        return teme_to_ecef_km(r_teme_km, gmst_rad(propagator.epoch_utc, times))

    return positions


@dataclass(frozen=True, eq=False)  # eq=False: arrays do not compare to a single bool
class LookAngles:
    elevation_deg: np.ndarray
    azimuth_deg: np.ndarray  # from north through east, [0, 360)
    range_km: np.ndarray


@dataclass(frozen=True)
class GroundStation:
    name: str
    lat_deg: float
    lon_deg: float
    alt_m: float = 0.0
    min_elevation_deg: float = 10.0  # the mask: below it the link does not close

    def __post_init__(self) -> None:
        if type(self.name) is not str or not self.name:
            raise ValueError(f"GroundStation.name must be a non-empty str, got {self.name!r}")
        checks = (("lat_deg", -90.0, 90.0), ("lon_deg", -180.0, 360.0), ("alt_m", -500.0, 9000.0),
                  ("min_elevation_deg", 0.0, 89.0))
        for key, lo, hi in checks:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise ValueError(f"GroundStation {self.name!r}: {key} must be a number in [{lo:g}, {hi:g}], "
                                 f"got {value!r}")

    @cached_property
    def ecef_km(self) -> np.ndarray:
        return geodetic_to_ecef_km(self.lat_deg, self.lon_deg, self.alt_m / 1000.0)

    @cached_property
    def enu_rotation(self) -> np.ndarray:
        """Rows: east, north and up (the geodetic normal) unit vectors in the Earth-fixed frame."""
        lat, lon = math.radians(self.lat_deg), math.radians(self.lon_deg)
        sl, cl, so, co = math.sin(lat), math.cos(lat), math.sin(lon), math.cos(lon)
        return np.array([[-so, co, 0.0], [-sl * co, -sl * so, cl], [cl * co, cl * so, sl]])

    @cached_property
    def _scalars(self) -> tuple[float, ...]:
        return (*map(float, self.ecef_km), *map(float, self.enu_rotation[2]))

    def look_angles(self, r_ecef_km: np.ndarray) -> LookAngles:
        """Elevation, azimuth and range to satellite positions (...,3) km, vectorized."""
        enu = (np.asarray(r_ecef_km, dtype=np.float64) - self.ecef_km) @ self.enu_rotation.T
        east, north, up = enu[..., 0], enu[..., 1], enu[..., 2]
        horizontal = np.hypot(east, north)
        return LookAngles(
            elevation_deg=np.degrees(np.arctan2(up, horizontal)),
            azimuth_deg=np.degrees(np.arctan2(east, north)) % 360.0,
            range_km=np.hypot(horizontal, up),
        )

    def elevation_deg(self, r_ecef_km: np.ndarray) -> np.ndarray:
        d = np.asarray(r_ecef_km, dtype=np.float64) - self.ecef_km
        up = d @ self.enu_rotation[2]
        return np.degrees(np.arcsin(np.clip(up / np.linalg.norm(d, axis=-1), -1.0, 1.0)))

    def elevation_range_at(self, x_km: float, y_km: float, z_km: float) -> tuple[float, float]:
        """(elevation_deg, range_km) to one position, in plain floats (~1 µs, for per-tick use)."""
        sx, sy, sz, ux, uy, uz = self._scalars
        dx, dy, dz = x_km - sx, y_km - sy, z_km - sz
        range_km = math.sqrt(dx * dx + dy * dy + dz * dz)
        return math.degrees(math.asin(max(-1.0, min(1.0, (dx * ux + dy * uy + dz * uz) / range_km)))), range_km


@dataclass(frozen=True)
class Pass:
    """One pass over one station, in sim seconds since the scenario epoch.

    A pass already in progress at the start of the searched window has aos_s at the window start;
    one still in progress at its end has los_s at the window end.
    """

    station: str  # the station's name
    aos_s: float  # acquisition of signal: elevation rises through the mask
    los_s: float  # loss of signal: elevation sets through the mask
    max_elevation_deg: float
    tca_s: float  # time of closest approach (culmination)

    @property
    def duration_s(self) -> float:
        return self.los_s - self.aos_s


def _zoom_crossings(station: GroundStation, positions: PositionFn, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Times in [lo, hi] where elevation crosses the mask (one sign change per bracket)."""
    if lo.size == 0:
        return lo
    mask = station.min_elevation_deg
    fractions = np.linspace(0.0, 1.0, _SPLITS + 1)
    rows = np.arange(lo.size)
    for _ in range(_CROSSING_ROUNDS):
        grid = lo[:, None] + (hi - lo)[:, None] * fractions[None, :]
        g = station.elevation_deg(positions(grid.ravel())).reshape(grid.shape) - mask
        above = g >= 0.0
        # First sample on the other side of the mask from the bracket's start.
        k = np.argmax(above != above[:, :1], axis=1)
        k = np.where(k == 0, _SPLITS, k)  # none seen (rounding at the far end): take the last part
        lo, hi = grid[rows, k - 1], grid[rows, k]
        g_lo, g_hi = g[rows, k - 1], g[rows, k]
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = np.where(g_lo != g_hi, g_lo / (g_lo - g_hi), 0.5)
    return lo + (hi - lo) * np.clip(weight, 0.0, 1.0)


def _zoom_maxima(station: GroundStation, positions: PositionFn, center: np.ndarray,
                 half_width_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(tca_s, max elevation) of the culmination inside each [center - half_width, center + half_width]."""
    if center.size == 0:
        return center, center
    offsets = np.linspace(-1.0, 1.0, _SPLITS + 1)
    rows = np.arange(center.size)
    half = np.full(center.shape, float(half_width_s))
    for _ in range(_MAXIMUM_ROUNDS):
        grid = center[:, None] + half[:, None] * offsets[None, :]
        e = station.elevation_deg(positions(grid.ravel())).reshape(grid.shape)
        k = np.argmax(e, axis=1)
        center = grid[rows, k]
        half = half * (2.0 / _SPLITS)
    # The final spacing is sub-millisecond: the sample maximum is the maximum to ~1e-9 deg.
    best = station.elevation_deg(positions(center))
    return center, best


def _station_passes(station: GroundStation, positions: PositionFn, t: np.ndarray,
                    elevation: np.ndarray) -> list[Pass]:
    g = elevation - station.min_elevation_deg
    step = float(t[1] - t[0]) if t.size > 1 else 0.0
    above = g >= 0.0
    # Runs of samples at or above the mask.
    change = np.diff(above.astype(np.int8))
    starts = list(np.flatnonzero(change == 1) + 1)
    ends = list(np.flatnonzero(change == -1))
    if above[0]:
        starts.insert(0, 0)
    if above[-1]:
        ends.append(t.size - 1)
    runs = list(zip(starts, ends))
    # Grazing culminations: a local maximum whose samples all lie below the mask but which may
    # cross it between them. Refine them all (about one per orbit) and keep those that do.
    interior = np.flatnonzero((g[1:-1] >= g[:-2]) & (g[1:-1] > g[2:]) & ~above[1:-1]) + 1
    tca_graze, peak_graze = _zoom_maxima(station, positions, t[interior], step)
    grazing = [(i, tc, pk) for i, tc, pk in zip(interior, tca_graze, peak_graze) if pk >= station.min_elevation_deg]

    # Culmination of each run, refined around its best sample.
    peaks = np.array([a + int(np.argmax(g[a:b + 1])) for a, b in runs], dtype=int)
    tca_run, peak_run = _zoom_maxima(station, positions, t[peaks], step)

    # Crossing brackets: [last sample below, first sample above] on each side of a run, or for a
    # grazing culmination, the samples on either side of it and the culmination itself.
    rise_lo, rise_hi, set_lo, set_hi = [], [], [], []
    entries = []
    for (a, b), tca, peak in zip(runs, tca_run, peak_run):
        entries.append(("run", a, b, tca, peak))
        if a > 0:
            rise_lo.append(t[a - 1]); rise_hi.append(t[a])
        if b < t.size - 1:
            set_lo.append(t[b]); set_hi.append(t[b + 1])
    for i, tca, peak in grazing:
        entries.append(("graze", i, i, tca, peak))
        rise_lo.append(t[i - 1]); rise_hi.append(tca)
        set_lo.append(tca); set_hi.append(t[i + 1])
    rises = iter(_zoom_crossings(station, positions, np.array(rise_lo), np.array(rise_hi)))
    sets = iter(_zoom_crossings(station, positions, np.array(set_lo), np.array(set_hi)))
    out = []
    for kind, a, b, tca, peak in entries:
        aos = float(t[0]) if kind == "run" and a == 0 else float(next(rises))
        los = float(t[-1]) if kind == "run" and b == t.size - 1 else float(next(sets))
        if not aos <= tca <= los:
            # A pass cut by the window whose culmination lies outside it: its highest point in the
            # window is at the cut.
            tca = min(max(float(tca), aos), los)
            peak = station.elevation_deg(positions(np.array([tca])))[0]
        out.append(Pass(station=station.name, aos_s=aos, los_s=los, max_elevation_deg=float(peak),
                        tca_s=float(tca)))
    return out


def find_passes(stations: Iterable[GroundStation], positions: PositionFn, start_s: float, end_s: float,
                step_s: float = 10.0) -> list[Pass]:
    """Passes over ``stations`` in [start_s, end_s], sorted by AOS, from an Earth-fixed position function.

    step_s is the coarse search grid; crossings and culminations are refined on finer grids
    around them, so it only needs to be short compared with a pass (10 s for LEO).
    """
    if not end_s > start_s:
        raise ValueError(f"end_s must be after start_s, got [{start_s}, {end_s}]")
    if not step_s > 0.0:
        raise ValueError(f"step_s must be > 0, got {step_s}")
    n = max(2, int(math.ceil((end_s - start_s) / step_s)) + 1)
    t = start_s + step_s * np.arange(n, dtype=np.float64)
    t[-1] = min(t[-1], end_s)  # the last step may be short
    if t[-1] <= t[-2]:
        t = t[:-1]
    r_km = positions(t)
    out: list[Pass] = []
    for station in stations:
        out.extend(_station_passes(station, positions, t, station.elevation_deg(r_km)))
    out.sort(key=lambda p: (p.aos_s, p.station))
    return out


def passes(stations: Iterable[GroundStation], propagator: OrbitPropagator, start_s: float, end_s: float,
           step_s: float = 10.0) -> list[Pass]:
    """Passes of the propagated orbit over ``stations`` in [start_s, end_s] (sim seconds), by AOS."""
    return find_passes(stations, earth_fixed_positions(propagator), start_s, end_s, step_s)


def stations_from_config(entries: Iterable[dict]) -> list[GroundStation]:
    """GroundStations from scenario ``[[ground.stations]]`` tables (already validated)."""
    return [GroundStation(name=e["name"], lat_deg=e["lat_deg"], lon_deg=e["lon_deg"], alt_m=e["alt_m"],
                          min_elevation_deg=e["min_elevation_deg"]) for e in entries]


class PassPredictor:
    """A rolling window of predicted passes, answered per tick by bisection.

    The window reaches ``window_s`` ahead of the time that triggered it and is recomputed (one
    batch) when a query's look-ahead would run past what is known. It also reaches
    ``history_s`` back, so that a pass already in progress is found whole. A pass cut by the
    window's end is not reported until the next window sees it whole.
    """

    def __init__(self, propagator: OrbitPropagator, stations: Sequence[GroundStation], *,
                 step_s: float = 10.0, window_s: float = 86400.0, lookahead_s: float = 43200.0,
                 history_s: float = 3600.0) -> None:
        if not 0.0 < lookahead_s < window_s:
            raise ValueError(f"lookahead_s must be in (0, window_s={window_s}), got {lookahead_s}")
        names = [s.name for s in stations]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"ground station name(s) {', '.join(map(repr, duplicates))} appear twice")
        self.stations = {s.name: s for s in stations}
        self.step_s = float(step_s)
        self.window_s = float(window_s)
        self.lookahead_s = float(lookahead_s)
        self.history_s = float(history_s)
        self._positions = earth_fixed_positions(propagator)
        self._passes: list[Pass] = []
        self._aos: list[float] = []
        self._longest_s = 0.0
        self._known_from_s = math.inf
        self._known_until_s = -math.inf
        self.windows_computed = 0

    def _ensure(self, t_s: float) -> None:
        if t_s < self._known_from_s or t_s + self.lookahead_s > self._known_until_s:
            self.refresh(t_s)

    def refresh(self, t_s: float) -> None:
        start, end = float(t_s) - self.history_s, float(t_s) + self.window_s
        found = find_passes(self.stations.values(), self._positions, start, end, self.step_s) if self.stations else []
        # Passes still open at the window's end are unknown beyond it, and so is anything after
        # their AOS (another station's pass could start before they end): stop the window there.
        known_until = min([p.aos_s for p in found if p.los_s >= end] + [end])
        self._passes = [p for p in found if p.aos_s < known_until and p.los_s < end]
        self._aos = [p.aos_s for p in self._passes]
        self._longest_s = max((p.duration_s for p in self._passes), default=0.0)
        self._known_from_s = start
        self._known_until_s = known_until
        self.windows_computed += 1

    def passes_at(self, t_s: float) -> list[Pass]:
        """Passes in progress at t_s (AOS <= t_s <= LOS): at most one per station."""
        self._ensure(t_s)
        # A pass in progress began at most the longest pass's duration ago.
        first = bisect.bisect_left(self._aos, t_s - self._longest_s)
        last = bisect.bisect_right(self._aos, t_s)
        passes_ = self._passes
        return [passes_[j] for j in range(first, last) if passes_[j].los_s >= t_s]

    def next_pass(self, t_s: float) -> Pass | None:
        """The first pass with AOS after t_s, or None if none is known within the look-ahead."""
        self._ensure(t_s)
        i = bisect.bisect_right(self._aos, t_s)
        return self._passes[i] if i < len(self._passes) else None

    def passes_between(self, start_s: float, end_s: float) -> list[Pass]:
        """Known passes with AOS in [start_s, end_s) (the window is recomputed at start_s if needed)."""
        self._ensure(start_s)
        return [p for p in self._passes if start_s <= p.aos_s < end_s]

    def in_view(self, t_s: float,
                r_ecef_km: Sequence[float] | None = None) -> tuple[GroundStation, float, float] | None:
        """(station, elevation_deg, range_km) of the highest station in view at t_s, or None.

        Give the satellite's Earth-fixed position when it is at hand (the world's track); without
        it one SGP4 + GMST evaluation is made, which is fine for tools but slow for every tick.
        """
        active = self.passes_at(t_s)
        if not active:
            return None
        if r_ecef_km is None:
            r_ecef_km = self._positions(np.array([float(t_s)]))[0]
        x, y, z = (float(v) for v in r_ecef_km)
        best = None
        for p in active:
            station = self.stations[p.station]
            elevation, range_km = station.elevation_range_at(x, y, z)
            if best is None or elevation > best[1]:
                best = (station, elevation, range_km)
        return best
