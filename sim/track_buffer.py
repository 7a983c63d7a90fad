"""A rolling window of precomputed orbit samples, so the world never calls skyfield per tick.

The window covers the current time plus a look-ahead of more than one orbit; it is recomputed in
one vectorized batch when the look-ahead would run past its end. The umbra intervals of each
window are extracted once, which also gives the predicted eclipse schedule (the next entry and
exit) that the navigation service reports to the flight software. The South Atlantic Anomaly
passes of each window are extracted the same way (a lat/lon box over the window's ground track),
so the SAA forecast costs nothing per tick either.
"""

from __future__ import annotations

import bisect

import numpy as np

from sim.eclipse import shadow_intervals, sun_angular_radius_rad
from sim.orbit import OrbitPropagator
from sim.orbit_track import OrbitTrack, compute_track

# Boundaries closer than this are the same eclipse seen from two windows.
_SAME_BOUNDARY_S = 1.0

# The South Atlantic Anomaly as a box at ~500 km: latitude -50..0 deg, longitude -90..+40 deg
# (east positive). Source: /work/shared/reference/domain-facts.md, "Radiation: SAA and single-event
# upsets" and requirement 9 (the anomaly drifts west ~0.3 deg/yr; a box is a first model).
SAA_LAT_DEG = (-50.0, 0.0)
SAA_LON_DEG = (-90.0, 40.0)


def saa_margin_deg(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """Degrees inside the SAA box (negative outside): the smallest distance to its four edges.

    Continuous along a ground track (the +-180 deg longitude seam is far outside the box), so
    interpolating it between samples puts entry and exit between samples, like the umbra's.
    """
    lat = np.asarray(lat_deg, dtype=np.float64)
    lon = np.asarray(lon_deg, dtype=np.float64)
    return np.minimum(np.minimum(lat - SAA_LAT_DEG[0], SAA_LAT_DEG[1] - lat),
                      np.minimum(lon - SAA_LON_DEG[0], SAA_LON_DEG[1] - lon))


def in_saa(lat_deg: float, lon_deg: float) -> bool:
    """The point is inside the SAA box (edges included)."""
    return SAA_LAT_DEG[0] <= lat_deg <= SAA_LAT_DEG[1] and SAA_LON_DEG[0] <= lon_deg <= SAA_LON_DEG[1]


class TrackBuffer:
    def __init__(self, propagator: OrbitPropagator, step_s: int, window_s: int = 6 * 3600,
                 lookahead_s: int = 3 * 3600) -> None:
        if lookahead_s >= window_s:
            raise ValueError("lookahead_s must be shorter than window_s")
        self.propagator = propagator
        self.step_s = step_s
        self.window_s = window_s - window_s % step_s
        self.lookahead_s = lookahead_s
        self.track: OrbitTrack | None = None
        self._start_s = 0
        self._end_s = -1
        self._intervals: list[tuple[float, float]] = []
        self._interval_ends: list[float] = []
        self._saa_intervals: list[tuple[float, float]] = []
        self._saa_ends: list[float] = []
        # Every umbra interval that began after time zero, across all windows.
        self.umbra_log: list[tuple[float, float]] = []
        self.windows_computed = 0

    def index(self, t_s: int) -> int:
        """Index of time t_s (a multiple of step_s) in self.track, refreshing the window if needed."""
        if t_s < self._start_s or t_s + self.lookahead_s > self._end_s:
            self._refresh(t_s)
        return (t_s - self._start_s) // self.step_s

    def _refresh(self, t_s: int) -> None:
        start = t_s - t_s % self.step_s
        times = np.arange(start, start + self.window_s + self.step_s, self.step_s, dtype=np.float64)
        self.track = compute_track(self.propagator, times)
        self._start_s = start
        self._end_s = int(times[-1])
        self.windows_computed += 1
        track = self.track
        # Umbra: the Earth's disk covers the whole solar disk, i.e. the signed separation of the
        # sun's centre from the Earth's limb is below minus the sun's angular radius. Interpolating
        # this continuous function puts boundaries between samples (sub-second at 1 s steps).
        threshold_rad = -sun_angular_radius_rad(track.r_teme_km, track.sun_teme_km)
        intervals = shadow_intervals(track.t_s, track.shadow_signed, threshold_rad)
        self._intervals = intervals
        self._interval_ends = [end for _, end in intervals]
        # SAA passes: where the box margin is >= 0, i.e. its negation is <= 0 (shadow_intervals is
        # the generic finder of where an interpolated series is <= 0, boundaries between samples).
        self._saa_intervals = shadow_intervals(track.t_s, -saa_margin_deg(track.lat_deg, track.lon_deg))
        self._saa_ends = [end for _, end in self._saa_intervals]
        for begin, end in intervals:
            # An interval starting at the window's first sample was already in progress.
            if begin <= start:
                continue
            self._log_interval(begin, end)

    def _log_interval(self, begin: float, end: float) -> None:
        for i, (b, _) in enumerate(self.umbra_log):
            if abs(b - begin) < _SAME_BOUNDARY_S:
                # Seen before from an earlier window: keep the later window's end, which is not cut.
                self.umbra_log[i] = (b, max(end, self.umbra_log[i][1]))
                return
        self.umbra_log.append((begin, end))

    def next_umbra(self, t_s: int) -> tuple[float, float] | None:
        """The umbra interval in progress at t_s, or the next one; None if none in the look-ahead.

        An end equal to the window's end means the interval runs past what is computed.
        """
        self.index(t_s)
        i = bisect.bisect_right(self._interval_ends, float(t_s))
        if i < len(self._intervals):
            return self._intervals[i]
        return None

    def next_saa(self, t_s: int) -> tuple[float, float] | None:
        """The SAA pass in progress at t_s, or the next one; None if none in the look-ahead.

        An end equal to the window's end means the pass runs past what is computed.
        """
        self.index(t_s)
        i = bisect.bisect_right(self._saa_ends, float(t_s))
        if i < len(self._saa_intervals):
            return self._saa_intervals[i]
        return None

    def umbra_begun_between(self, start_s: float, end_s: float) -> list[tuple[float, float]]:
        return [(b, e) for b, e in self.umbra_log if start_s <= b < end_s]
