"""Lumped thermal network: GPU die -> cold plate -> radiator -> space.

Three capacitive nodes joined by two conductances; the radiator emits to a 2.7 K sky and absorbs
Earth infrared and albedo:

    C_d dT_d/dt = P_gpu   - G_dp (T_d - T_p)
    C_p dT_p/dt = P_plate + G_dp (T_d - T_p) - G_pr (T_p - T_r)
    C_r dT_r/dt = Q_env   + G_pr (T_p - T_r) - eps sigma A (T_r^4 - T_space^4)

Environment on the radiator (one radiating face, area A):
- Earth IR: eps * A * F * 237 W/m2 (Kirchhoff: IR absorptivity = emissivity).
- Albedo: alpha * A * F * 0.30 * 1361 W/m2 * max(cos z, 0) * sunlit_fraction, with z the solar
  zenith angle at the sub-satellite point: the usual first-order albedo model (diffuse
  reflection of the sunlight falling on the ground below). It is scaled by sunlit_fraction so
  that a satellite in umbra (above the night side) gets none and a step that crosses the shadow
  boundary gets its share, whatever model produced cos z. Sunlight is taken at 1 AU.
- Direct sunlight: none. The radiator is assumed edge-on to the Sun (the usual design rule for
  a radiator; on a sun-pointing bus it lies in a plane containing the Sun line).
- View factor: F = radiator_earth_view_factor * (R / (R + h))^2. The parameter is the radiator's
  orientation factor: the view factor it would have to an Earth filling its lower half-space
  (1 nadir-facing, 0.5 edge-on to Earth, 0 zenith-facing). The altitude scaling is exact for a
  nadir-facing plate (F = (R/(R+h))^2); for a plate edge-on to Earth it overestimates (exact
  F = 0.31 at 325 km and 0.24 at 650 km, this model 0.45 and 0.41), so set the factor for
  the orientation you mean (e.g. about 0.34 at 325 km for an edge-on plate).

Integration (step inputs are constant over the step): the linear conduction network is
integrated exactly with its matrix propagator Phi(h) = h * phi1(h A), phi1(x) = (e^x - 1) / x,
computed once per step length from a symmetric eigen-decomposition and cached. That part is
unconditionally stable and exact at any dt, however small the die capacitance. Radiation, the
one nonlinear term and a slow one (radiator time constants are many minutes), enters as the
flux averaged over the step from its tangent at the current radiator temperature (a trapezoid,
solved in closed form): second order. Because every column of C * Phi sums to h * C (the
conduction network conserves energy), the stored energy changes by exactly
dt * (heat in + absorbed - radiated flux used), which the ledger records: energy is conserved to
round-off. Sub-steps are taken only when the radiator itself is fast enough for the radiation
tangent to matter: dt * 4 eps sigma A T_r^3 / C_r > 0.5 (never, for a real radiator at dt <= 10 s).

Pure Python scalars in the step: a few microseconds per call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.constants import (
    EARTH_ALBEDO,
    EARTH_IR_W_M2,
    R_EARTH_EQUATORIAL_KM,
    SOLAR_CONSTANT_W_M2,
    STEFAN_BOLTZMANN_W_M2_K4,
)
from sim.validation import check_range

T_SPACE_K = 2.7  # cosmic background
KELVIN_OFFSET = 273.15

# Radiation tangent times the step, over the radiator capacitance, above which we sub-step.
_MAX_RADIATION_STEP = 0.5
_PROPAGATOR_CACHE_SIZE = 32


@dataclass(frozen=True)
class ThermalParams:
    die_heat_capacity_j_k: float  # die, package, HBM and lid
    plate_heat_capacity_j_k: float  # cold plate and whatever shares its temperature
    radiator_heat_capacity_j_k: float
    die_to_plate_w_k: float
    plate_to_radiator_w_k: float  # heat pipes / pumped loop
    radiator_area_m2: float  # radiating area (one face)
    radiator_emissivity: float  # infrared
    radiator_absorptivity: float  # solar
    radiator_earth_view_factor: float  # orientation factor, see the module docstring
    initial_temp_c: float  # all nodes start here

    def __post_init__(self) -> None:
        inf = math.inf
        checks = (
            ("die_heat_capacity_j_k", 0.0, inf, True),
            ("plate_heat_capacity_j_k", 0.0, inf, True),
            ("radiator_heat_capacity_j_k", 0.0, inf, True),
            ("die_to_plate_w_k", 0.0, inf, True),
            ("plate_to_radiator_w_k", 0.0, inf, True),
            ("radiator_area_m2", 0.0, inf, True),
            ("radiator_emissivity", 0.0, 1.0, True),
            ("radiator_absorptivity", 0.0, 1.0, False),
            ("radiator_earth_view_factor", 0.0, 1.0, False),
            ("initial_temp_c", -KELVIN_OFFSET, inf, True),
        )
        for name, lo, hi, lo_open in checks:
            check_range(name, getattr(self, name), lo, hi, lo_open)


def earth_view_factor(params: ThermalParams, altitude_km: float) -> float:
    """Radiator-to-Earth view factor at this altitude (see the module docstring)."""
    ratio = R_EARTH_EQUATORIAL_KM / (R_EARTH_EQUATORIAL_KM + altitude_km)
    return params.radiator_earth_view_factor * ratio * ratio


def environment_absorbed_w(params: ThermalParams, sunlit_fraction: float,
                           cos_sun_zenith: float, altitude_km: float) -> float:
    """Earth IR plus albedo absorbed by the radiator, in W."""
    area_f = params.radiator_area_m2 * earth_view_factor(params, altitude_km)
    earth_ir_w = params.radiator_emissivity * area_f * EARTH_IR_W_M2
    albedo_w = (params.radiator_absorptivity * area_f * EARTH_ALBEDO * SOLAR_CONSTANT_W_M2
                * max(cos_sun_zenith, 0.0) * sunlit_fraction)
    return earth_ir_w + albedo_w


def steady_state_radiator_temp_c(params: ThermalParams, heat_w: float, env_w: float) -> float:
    """Radiator temperature that rejects heat_w + env_w: eps sigma A (T^4 - T_space^4) = heat + env."""
    total_w = heat_w + env_w
    k_rad = params.radiator_emissivity * STEFAN_BOLTZMANN_W_M2_K4 * params.radiator_area_m2
    t4 = total_w / k_rad + T_SPACE_K ** 4
    if t4 < 0.0:
        raise ValueError(f"heat_w + env_w = {total_w:g} W is below what space absorbs")
    return t4 ** 0.25 - KELVIN_OFFSET


def _conduction_propagator(params: ThermalParams, h_s: float) -> tuple[float, ...]:
    """Phi = h * phi1(h A) for dT/dt = A T + b, A = -C^-1 G (the conduction network), row-major.

    The exact step of the linear network with constant sources is T += Phi @ (A T + b).
    C^(1/2) A C^(-1/2) is symmetric, so phi1 comes from a real eigen-decomposition.
    """
    g1, g2 = params.die_to_plate_w_k, params.plate_to_radiator_w_k
    conductance = np.array([[g1, -g1, 0.0], [-g1, g1 + g2, -g2], [0.0, -g2, g2]])
    capacity = np.array([params.die_heat_capacity_j_k, params.plate_heat_capacity_j_k,
                         params.radiator_heat_capacity_j_k])
    inv_sqrt_c = 1.0 / np.sqrt(capacity)
    symmetric = inv_sqrt_c[:, None] * conductance * inv_sqrt_c[None, :]
    eigenvalues, vectors = np.linalg.eigh(symmetric)
    x = -h_s * eigenvalues
    small = np.abs(x) < 1e-8
    phi1 = np.where(small, 1.0 + 0.5 * x, np.expm1(x) / np.where(small, 1.0, x))
    core = (vectors * phi1) @ vectors.T
    phi = h_s * inv_sqrt_c[:, None] * core * (1.0 / inv_sqrt_c)[None, :]
    return tuple(float(v) for v in phi.ravel())


class ThermalNetwork:
    def __init__(self, params: ThermalParams) -> None:
        self.params = params
        t0_k = params.initial_temp_c + KELVIN_OFFSET
        self._t0_k = t0_k
        self._t_die_k = t0_k
        self._t_plate_k = t0_k
        self._t_rad_k = t0_k
        self._c_die = float(params.die_heat_capacity_j_k)
        self._c_plate = float(params.plate_heat_capacity_j_k)
        self._c_rad = float(params.radiator_heat_capacity_j_k)
        self._g_dp = float(params.die_to_plate_w_k)
        self._g_pr = float(params.plate_to_radiator_w_k)
        self._k_rad = (params.radiator_emissivity * STEFAN_BOLTZMANN_W_M2_K4
                       * params.radiator_area_m2)
        self._space_t4 = T_SPACE_K ** 4
        self._ir_w_at_f1 = params.radiator_emissivity * params.radiator_area_m2 * EARTH_IR_W_M2
        self._albedo_w_at_f1 = (params.radiator_absorptivity * params.radiator_area_m2
                                * EARTH_ALBEDO * SOLAR_CONSTANT_W_M2)
        self._view = float(params.radiator_earth_view_factor)
        self._propagators: dict[float, tuple[float, ...]] = {}
        # Cumulative energy ledger since construction, in J.
        self.heat_in_j = 0.0  # GPU and plate heat
        self.absorbed_env_j = 0.0  # Earth IR and albedo
        self.radiated_j = 0.0  # emitted minus what the 2.7 K sky sends back

    # -- state ----------------------------------------------------------------------------

    @property
    def die_temp_c(self) -> float:
        return self._t_die_k - KELVIN_OFFSET

    @property
    def plate_temp_c(self) -> float:
        return self._t_plate_k - KELVIN_OFFSET

    @property
    def radiator_temp_c(self) -> float:
        return self._t_rad_k - KELVIN_OFFSET

    @property
    def stored_energy_j(self) -> float:
        """Heat stored in the three nodes since construction (sum of C_i * (T_i - T_0))."""
        t0 = self._t0_k
        return (self._c_die * (self._t_die_k - t0) + self._c_plate * (self._t_plate_k - t0)
                + self._c_rad * (self._t_rad_k - t0))

    @property
    def energy_balance_error_j(self) -> float:
        """heat in + absorbed - radiated - stored: zero to round-off."""
        return self.heat_in_j + self.absorbed_env_j - self.radiated_j - self.stored_energy_j

    # -- dynamics -------------------------------------------------------------------------

    def _propagator(self, h_s: float) -> tuple[float, ...]:
        phi = self._propagators.get(h_s)
        if phi is None:
            if len(self._propagators) >= _PROPAGATOR_CACHE_SIZE:
                self._propagators.clear()
            phi = _conduction_propagator(self.params, h_s)
            self._propagators[h_s] = phi
        return phi

    def step(self, dt_s: float, gpu_heat_w: float, plate_heat_w: float, sunlit_fraction: float,
             cos_sun_zenith: float, altitude_km: float) -> None:
        """Advance dt_s with heat inputs and environment held constant over the step."""
        if not (dt_s > 0.0 and dt_s < math.inf):
            raise ValueError(f"dt_s must be finite and > 0, got {dt_s!r}")
        if not (gpu_heat_w >= 0.0 and plate_heat_w >= 0.0):
            raise ValueError(f"heat inputs must be >= 0, got gpu_heat_w={gpu_heat_w!r}, "
                             f"plate_heat_w={plate_heat_w!r}")
        if not 0.0 <= sunlit_fraction <= 1.0:
            raise ValueError(f"sunlit_fraction must be in [0, 1], got {sunlit_fraction!r}")
        if not altitude_km >= 0.0:
            raise ValueError(f"altitude_km must be >= 0, got {altitude_km!r}")
        ratio = R_EARTH_EQUATORIAL_KM / (R_EARTH_EQUATORIAL_KM + altitude_km)
        view = self._view * ratio * ratio
        albedo_w = (self._albedo_w_at_f1 * view * sunlit_fraction * cos_sun_zenith
                    if cos_sun_zenith > 0.0 else 0.0)
        env_w = self._ir_w_at_f1 * view + albedo_w

        c_d, c_p, c_r = self._c_die, self._c_plate, self._c_rad
        g_dp, g_pr, k_rad = self._g_dp, self._g_pr, self._k_rad
        t_d, t_p, t_r = self._t_die_k, self._t_plate_k, self._t_rad_k
        stiffness = 4.0 * k_rad * t_r * t_r * t_r * dt_s / c_r
        n_sub = 1 if stiffness <= _MAX_RADIATION_STEP else math.ceil(stiffness / _MAX_RADIATION_STEP)
        h = dt_s / n_sub
        m00, m01, m02, m10, m11, m12, m20, m21, m22 = self._propagator(h)
        inv_c_r = 1.0 / c_r
        radiated_j = 0.0
        for _ in range(n_sub):
            t_r2 = t_r * t_r
            q_rad_w = k_rad * (t_r2 * t_r2 - self._space_t4)
            tangent_w_k = 4.0 * k_rad * t_r2 * t_r
            flow_dp_w = g_dp * (t_d - t_p)
            flow_pr_w = g_pr * (t_p - t_r)
            # Rates of the linear part (everything but radiation).
            a_d = (gpu_heat_w - flow_dp_w) / c_d
            a_p = (plate_heat_w + flow_dp_w - flow_pr_w) / c_p
            a_r = (env_w + flow_pr_w) * inv_c_r
            x_d = m00 * a_d + m01 * a_p + m02 * a_r
            x_p = m10 * a_d + m11 * a_p + m12 * a_r
            x_r = m20 * a_d + m21 * a_p + m22 * a_r
            # Radiated flux averaged over the step along its tangent: q = q0 + tangent * dT_r / 2,
            # with dT_r = x_r - m22 * q / C_r; solved for dT_r in closed form.
            d_r = (x_r - m22 * q_rad_w * inv_c_r) / (1.0 + 0.5 * m22 * tangent_w_k * inv_c_r)
            q_w = q_rad_w + 0.5 * tangent_w_k * d_r
            qc = q_w * inv_c_r
            t_d += x_d - m02 * qc
            t_p += x_p - m12 * qc
            t_r += x_r - m22 * qc
            radiated_j += q_w * h
        self._t_die_k, self._t_plate_k, self._t_rad_k = t_d, t_p, t_r
        self.heat_in_j += (gpu_heat_w + plate_heat_w) * dt_s
        self.absorbed_env_j += env_w * dt_s
        self.radiated_j += radiated_j
