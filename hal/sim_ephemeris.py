"""The onboard ephemeris as a device: what the satellite's own orbit propagator predicts.

On orbit this is the nav computer propagating its latest GNSS-fitted elements; in SIL it is the
same propagation the world flies (the scenario's SGP4 orbit), so predictions and what then
happens agree. Telemetry (``tlm.ephemeris``), sampled where the scheduler asks (every 10 s in SIL):

- the ground track ahead: latitude and longitude every ``track_step_s`` for ``horizon_s``;
- the next umbra intervals (up to two), as seconds from now;
- the next pass over each ground station of the scenario within ``passes_horizon_s``.

Every time is in seconds from the sample's own mission time (the message's ``t_ns``), so a reader
turns it into UTC without knowing the epoch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hal.interfaces import CommandHandler
from sim.ground_stations import PassPredictor, stations_from_config
from sim.world import World

TRACK_STEP_S = 20
TRACK_HORIZON_S = 2 * 3600  # more than an orbit: "where next" always has an answer
PASSES_HORIZON_S = 24 * 3600


class SimEphemeris:
    name = "ephemeris"

    def __init__(self, world: World, *, track_step_s: int = TRACK_STEP_S, horizon_s: int = TRACK_HORIZON_S,
                 passes_horizon_s: float = PASSES_HORIZON_S) -> None:
        self.world = world
        if track_step_s % world.step_s:
            raise ValueError(f"track_step_s {track_step_s} must be a multiple of the world step {world.step_s}")
        self.track_step_s = int(track_step_s)
        self.horizon_s = int(horizon_s)
        self.passes_horizon_s = float(passes_horizon_s)
        stations = stations_from_config(world.scenario.ground_stations)
        # The predictor's window reaches twice the horizon ahead, so one batch serves the next
        # horizon's worth of samples (a window barely longer than the look-ahead was recomputed
        # at almost every 10 s sample: 19 ms each, 2 ms per SIL tick on average).
        self._passes = (PassPredictor(world.orbit.propagator, stations, window_s=2.0 * self.passes_horizon_s,
                                      lookahead_s=self.passes_horizon_s)
                        if stations else None)
        self.station_names = [s.name for s in stations]
        # The track window's latitudes and longitudes rounded to the published 3 decimals, as
        # lists, once per window (rounding is elementwise, so a slice of these is the rounded
        # slice): a sample then only slices them (~2 us against ~15 us to round and convert).
        self._rounded_for: object = None
        self._lat_rounded: list[float] = []
        self._lon_rounded: list[float] = []

    def read(self) -> dict[str, Any]:
        w = self.world
        now_s = w.t_s
        # The world's track buffer always holds at least its look-ahead (3 h) past now at the
        # world step: the forecast is a strided slice of the very samples the world will fly.
        i = w.orbit.index(now_s)
        track = w.orbit.track
        stride = max(1, self.track_step_s // w.step_s)
        end = i + self.horizon_s // w.step_s + 1
        if end > len(track):
            raise ValueError(f"ephemeris horizon {self.horizon_s} s exceeds the track buffer's look-ahead")
        if track is not self._rounded_for:
            self._lat_rounded = np.round(track.lat_deg, 3).tolist()
            self._lon_rounded = np.round(track.lon_deg, 3).tolist()
            self._rounded_for = track
        lat = self._lat_rounded[i:end:stride]
        lon = self._lon_rounded[i:end:stride]
        umbras: list[list[float]] = []
        after = float(now_s)
        for _ in range(2):
            umbra = w.orbit.next_umbra(int(np.ceil(after)))
            if umbra is None:
                break
            start_s, end_s = umbra
            umbras.append([round(max(0.0, start_s - now_s), 1), round(end_s - now_s, 1)])
            after = end_s + 1.0
        passes: list[dict[str, Any]] = []
        if self._passes is not None:
            seen: set[str] = set()
            for p in self._passes.passes_between(float(now_s), now_s + self.passes_horizon_s):
                if p.station not in seen:
                    seen.add(p.station)
                    passes.append({"station": p.station, "aos_in_s": round(p.aos_s - now_s, 1),
                                   "los_in_s": round(p.los_s - now_s, 1),
                                   "max_elevation_deg": round(p.max_elevation_deg, 1)})
        return {
            "track_step_s": self.track_step_s,
            "track_lat_deg": lat,
            "track_lon_deg": lon,
            "umbras": umbras,
            "passes": passes,
            "stations": list(self.station_names),
        }

    def command_handlers(self) -> dict[str, CommandHandler]:
        return {}
