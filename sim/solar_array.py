"""Solar array output: sunlight on a sun-pointing panel, converted by the cells.

P = S / d^2 * area * cell_efficiency * packing_factor * pointing_cos * sunlit_fraction

with S the solar constant at 1 AU and d the Sun distance in AU. The packing factor lumps cell
packing, wiring and regulator losses (about 0.85, SMAD). Cell temperature and radiation
degradation are not modelled here: fold them into cell_efficiency (end-of-life value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.constants import SOLAR_CONSTANT_W_M2
from sim.validation import check_range


@dataclass(frozen=True)
class SolarArrayParams:
    area_m2: float
    cell_efficiency: float
    packing_factor: float = 0.85
    pointing_cos: float = 1.0  # cosine of the Sun's angle off the array normal; 1.0: sun-pointing

    def __post_init__(self) -> None:
        check_range("area_m2", self.area_m2, 0.0, math.inf, lo_open=True)
        check_range("cell_efficiency", self.cell_efficiency, 0.0, 1.0, lo_open=True)
        check_range("packing_factor", self.packing_factor, 0.0, 1.0, lo_open=True)
        check_range("pointing_cos", self.pointing_cos, 0.0, 1.0, lo_open=False)

    @property
    def power_at_1au_w(self) -> float:
        """Full-sun output at 1 AU."""
        return (SOLAR_CONSTANT_W_M2 * self.area_m2 * self.cell_efficiency
                * self.packing_factor * self.pointing_cos)


def array_power_w(params: SolarArrayParams, sunlit_fraction, sun_distance_au):
    """Array output in W. Scalars in, float out; arrays in, array out (broadcast).

    sunlit_fraction: 1 in full sun, 0 in umbra, in between in penumbra or for a step that
    crosses the shadow boundary. sun_distance_au: Sun-spacecraft distance in AU (0.983..1.017).
    """
    full_w = params.power_at_1au_w
    if isinstance(sunlit_fraction, (int, float)) and isinstance(sun_distance_au, (int, float)):
        if not 0.0 <= sunlit_fraction <= 1.0:
            raise ValueError(f"sunlit_fraction must be in [0, 1], got {sunlit_fraction!r}")
        if not sun_distance_au > 0.0:
            raise ValueError(f"sun_distance_au must be > 0, got {sun_distance_au!r}")
        return full_w * sunlit_fraction / (sun_distance_au * sun_distance_au)
    sunlit = np.asarray(sunlit_fraction, dtype=float)
    distance = np.asarray(sun_distance_au, dtype=float)
    if np.any(~((sunlit >= 0.0) & (sunlit <= 1.0))):
        raise ValueError("sunlit_fraction must be in [0, 1]")
    if np.any(~(distance > 0.0)):
        raise ValueError("sun_distance_au must be > 0")
    return full_w * sunlit / (distance * distance)
