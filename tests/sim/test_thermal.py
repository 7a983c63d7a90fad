"""Thermal network against analytic steady states, analytic step responses, a fine-step RK4
reference of the same ODEs, and its own energy ledger."""

import math
from dataclasses import replace

import pytest

from sim.thermal import (
    ThermalNetwork,
    ThermalParams,
    environment_absorbed_w,
    steady_state_radiator_temp_c,
)

SIGMA = 5.670374419e-8
R_EARTH_KM = 6378.137

BASE = ThermalParams(
    die_heat_capacity_j_k=600.0, plate_heat_capacity_j_k=8000.0,
    radiator_heat_capacity_j_k=20000.0, die_to_plate_w_k=30.0, plate_to_radiator_w_k=60.0,
    radiator_area_m2=2.5, radiator_emissivity=0.88, radiator_absorptivity=0.2,
    radiator_earth_view_factor=0.3, initial_temp_c=20.0)


def env_by_hand_w(p: ThermalParams, sunlit: float, cos_z: float, altitude_km: float) -> float:
    f = p.radiator_earth_view_factor * (R_EARTH_KM / (R_EARTH_KM + altitude_km)) ** 2
    ir = p.radiator_emissivity * p.radiator_area_m2 * f * 237.0
    albedo = p.radiator_absorptivity * p.radiator_area_m2 * f * 0.30 * 1361.0 * max(cos_z, 0.0) * sunlit
    return ir + albedo


def rk4_reference(p: ThermalParams, schedule, dt_s: float):
    """Fine-step RK4 of the three-node ODEs, written from the physics. schedule: list of
    (duration_s, gpu_w, plate_w, env_w). Returns the temperatures (K) after each segment."""
    t = [p.initial_temp_c + 273.15] * 3
    k = p.radiator_emissivity * SIGMA * p.radiator_area_m2

    def rhs(t, gpu_w, plate_w, env_w):
        q_dp = p.die_to_plate_w_k * (t[0] - t[1])
        q_pr = p.plate_to_radiator_w_k * (t[1] - t[2])
        q_rad = k * (t[2] ** 4 - 2.7 ** 4)
        return [(gpu_w - q_dp) / p.die_heat_capacity_j_k,
                (plate_w + q_dp - q_pr) / p.plate_heat_capacity_j_k,
                (env_w + q_pr - q_rad) / p.radiator_heat_capacity_j_k]

    out = []
    for duration_s, gpu_w, plate_w, env_w in schedule:
        n = round(duration_s / dt_s)
        for _ in range(n):
            k1 = rhs(t, gpu_w, plate_w, env_w)
            k2 = rhs([a + 0.5 * dt_s * b for a, b in zip(t, k1)], gpu_w, plate_w, env_w)
            k3 = rhs([a + 0.5 * dt_s * b for a, b in zip(t, k2)], gpu_w, plate_w, env_w)
            k4 = rhs([a + dt_s * b for a, b in zip(t, k3)], gpu_w, plate_w, env_w)
            t = [a + dt_s / 6.0 * (b + 2 * c + 2 * d + e)
                 for a, b, c, d, e in zip(t, k1, k2, k3, k4)]
        out.append(list(t))
    return out


def test_environment_by_hand():
    # Nadir-facing (factor 1) at 500 km, sub-solar point below: F = (6378.137/6878.137)^2.
    p = replace(BASE, radiator_earth_view_factor=1.0, radiator_area_m2=1.0,
                radiator_emissivity=0.85, radiator_absorptivity=0.25)
    f = (6378.137 / 6878.137) ** 2
    assert environment_absorbed_w(p, 1.0, 1.0, 500.0) == pytest.approx(
        f * (0.85 * 237.0 + 0.25 * 0.30 * 1361.0), rel=1e-12)
    # Night side / umbra: Earth IR only.
    assert environment_absorbed_w(p, 0.0, -0.5, 500.0) == pytest.approx(f * 0.85 * 237.0, rel=1e-12)
    assert environment_absorbed_w(p, 1.0, -0.2, 500.0) == pytest.approx(f * 0.85 * 237.0, rel=1e-12)


def test_steady_state_radiator_formula():
    p = replace(BASE, radiator_area_m2=2.0, radiator_emissivity=0.85)
    # At 40 C one face of eps 0.85 rejects sigma*0.85*(313.15^4 - 2.7^4) = 463 W/m2 (the table
    # in the domain facts), so 926 W on 2 m2 with no environment holds it at 40 C.
    heat_w = 0.85 * SIGMA * 2.0 * (313.15 ** 4 - 2.7 ** 4)
    assert heat_w / 2.0 == pytest.approx(463.0, abs=1.0)
    assert steady_state_radiator_temp_c(p, heat_w, 0.0) == pytest.approx(40.0, abs=1e-9)
    assert steady_state_radiator_temp_c(p, heat_w - 100.0, 100.0) == pytest.approx(40.0, abs=1e-9)


@pytest.mark.parametrize("dt_s", [1.0, 10.0])
def test_converges_to_analytic_steady_state(dt_s):
    # Smaller capacitances so that the slowest mode (~ C_total / (4 eps sigma A T^3)) settles
    # in a few simulated hours.
    p = replace(BASE, plate_heat_capacity_j_k=2000.0, radiator_heat_capacity_j_k=4000.0)
    gpu_w, plate_w, sunlit, cos_z, alt_km = 500.0, 150.0, 1.0, 0.6, 325.0
    env_w = env_by_hand_w(p, sunlit, cos_z, alt_km)
    net = ThermalNetwork(p)
    for _ in range(int(60000 / dt_s)):
        net.step(dt_s, gpu_w, plate_w, sunlit, cos_z, alt_km)
    t_rad_c = steady_state_radiator_temp_c(p, gpu_w + plate_w, env_w)
    assert net.radiator_temp_c == pytest.approx(t_rad_c, abs=1e-6)
    assert net.plate_temp_c == pytest.approx(t_rad_c + (gpu_w + plate_w) / 60.0, abs=1e-6)
    assert net.die_temp_c == pytest.approx(t_rad_c + (gpu_w + plate_w) / 60.0 + gpu_w / 30.0,
                                           abs=1e-6)


@pytest.mark.parametrize("dt_s", [0.5, 1.0, 10.0])
def test_die_step_response_matches_analytic_exponential(dt_s):
    # Plate and radiator so massive that they stay at the initial temperature: the die is a
    # single RC node, T(t) = T0 + P/G (1 - exp(-t G / C)), tau = 600/30 = 20 s.
    p = replace(BASE, plate_heat_capacity_j_k=1e13, radiator_heat_capacity_j_k=1e13)
    net = ThermalNetwork(p)
    power_w, g, c = 700.0, 30.0, 600.0
    t_s = 0.0
    for _ in range(int(100 / dt_s)):
        net.step(dt_s, power_w, 0.0, 0.0, 0.0, 325.0)
        t_s += dt_s
        expected_c = 20.0 + power_w / g * (1.0 - math.exp(-t_s * g / c))
        assert net.die_temp_c == pytest.approx(expected_c, abs=1e-6)


def _run_schedule(p, schedule, dt_s):
    net = ThermalNetwork(p)
    out = []
    for duration_s, gpu_w, plate_w, sunlit, cos_z, alt_km in schedule:
        for _ in range(round(duration_s / dt_s)):
            net.step(dt_s, gpu_w, plate_w, sunlit, cos_z, alt_km)
        out.append((net.die_temp_c, net.plate_temp_c, net.radiator_temp_c))
    return net, out


# Sunlit training, an idle stretch, eclipse (no albedo) with the GPU off, then training again.
SCHEDULE = [(600.0, 700.0, 150.0, 1.0, 0.8, 325.0), (300.0, 80.0, 150.0, 1.0, 0.3, 325.0),
            (900.0, 0.0, 150.0, 0.0, -0.5, 325.0), (600.0, 500.0, 150.0, 1.0, 0.5, 325.0)]


@pytest.mark.parametrize("die_capacity_j_k, dt_s, tolerance_k", [
    (600.0, 1.0, 5e-5), (600.0, 10.0, 3e-3), (20.0, 1.0, 5e-5), (20.0, 10.0, 3e-3)])
def test_matches_fine_rk4_reference(die_capacity_j_k, dt_s, tolerance_k):
    """Second order: the error shrinks ~100x from dt = 10 s to 1 s (~1e-3 K to ~1e-5 K)."""
    p = replace(BASE, die_heat_capacity_j_k=die_capacity_j_k, radiator_heat_capacity_j_k=5000.0)
    reference_schedule = [(d, g, pl, env_by_hand_w(p, s, cz, h)) for d, g, pl, s, cz, h in SCHEDULE]
    reference = rk4_reference(p, reference_schedule, dt_s=0.05)
    _, ours = _run_schedule(p, SCHEDULE, dt_s)
    for (d, pl, r), ref in zip(ours, reference):
        assert d == pytest.approx(ref[0] - 273.15, abs=tolerance_k)
        assert pl == pytest.approx(ref[1] - 273.15, abs=tolerance_k)
        assert r == pytest.approx(ref[2] - 273.15, abs=tolerance_k)


def test_energy_is_conserved():
    p = replace(BASE, radiator_heat_capacity_j_k=5000.0)
    net, _ = _run_schedule(p, SCHEDULE, 1.0)
    expected_heat_j = sum(d * (g + pl) for d, g, pl, *_ in SCHEDULE)
    expected_env_j = sum(d * env_by_hand_w(p, s, cz, h) for d, _, _, s, cz, h in SCHEDULE)
    assert net.heat_in_j == pytest.approx(expected_heat_j, rel=1e-12)
    assert net.absorbed_env_j == pytest.approx(expected_env_j, rel=1e-12)
    stored_j = (p.die_heat_capacity_j_k * (net.die_temp_c - 20.0)
                + p.plate_heat_capacity_j_k * (net.plate_temp_c - 20.0)
                + p.radiator_heat_capacity_j_k * (net.radiator_temp_c - 20.0))
    balance_j = net.heat_in_j + net.absorbed_env_j - net.radiated_j - stored_j
    assert abs(balance_j) < 1e-9 * net.heat_in_j
    assert net.stored_energy_j == pytest.approx(stored_j, rel=1e-9, abs=1e-3)


def test_radiated_ledger_matches_stefan_boltzmann_along_the_trajectory():
    """The ledger's radiated energy against an independent trapezoid of eps sigma A T^4."""
    p = replace(BASE, radiator_heat_capacity_j_k=5000.0)
    net = ThermalNetwork(p)
    k = p.radiator_emissivity * SIGMA * p.radiator_area_m2
    emitted_j = 0.0
    for duration_s, gpu_w, plate_w, sunlit, cos_z, alt_km in SCHEDULE:
        for _ in range(int(duration_s)):
            before_w = k * ((net.radiator_temp_c + 273.15) ** 4 - 2.7 ** 4)
            net.step(1.0, gpu_w, plate_w, sunlit, cos_z, alt_km)
            after_w = k * ((net.radiator_temp_c + 273.15) ** 4 - 2.7 ** 4)
            emitted_j += 0.5 * (before_w + after_w)
    assert net.radiated_j == pytest.approx(emitted_j, rel=1e-6)


@pytest.mark.parametrize("dt_s", [10.0, 30.0])
def test_stable_without_oscillation_for_a_tiny_die_capacitance(dt_s):
    # tau_die = 5 J/K / 30 W/K = 0.17 s, far below the step: an explicit scheme would explode.
    p = replace(BASE, die_heat_capacity_j_k=5.0)
    net = ThermalNetwork(p)
    die = [net.die_temp_c]
    for _ in range(60):
        net.step(dt_s, 700.0, 150.0, 1.0, 0.5, 325.0)
        die.append(net.die_temp_c)
        # The die sits just above the plate by P/G (quasi-steady), never beyond it.
        assert net.die_temp_c - net.plate_temp_c <= 700.0 / 30.0 + 1e-9
    assert all(b >= a for a, b in zip(die, die[1:]))  # heating: monotone, no overshoot
    for _ in range(60):
        net.step(dt_s, 0.0, 0.0, 0.0, -1.0, 325.0)
        die.append(net.die_temp_c)
        assert net.die_temp_c >= net.plate_temp_c - 1e-9  # never undershoots the plate
    cooling = die[61:]
    assert all(b <= a for a, b in zip(cooling, cooling[1:]))  # cooling: monotone
    assert abs(net.energy_balance_error_j) < 1e-9 * net.heat_in_j


def test_fast_radiator_takes_substeps_and_stays_exact():
    # A radiator of 20 J/K: its radiation time constant is ~1 s, so dt = 10 s needs sub-steps.
    p = replace(BASE, radiator_heat_capacity_j_k=20.0, plate_heat_capacity_j_k=50.0,
                die_heat_capacity_j_k=20.0)
    net = ThermalNetwork(p)
    radiator = []
    for _ in range(300):
        net.step(10.0, 300.0, 50.0, 1.0, 0.4, 500.0)
        radiator.append(net.radiator_temp_c)
    env_w = env_by_hand_w(p, 1.0, 0.4, 500.0)
    t_ss_c = steady_state_radiator_temp_c(p, 350.0, env_w)
    gaps = [abs(t - t_ss_c) for t in radiator]
    assert all(b <= a + 1e-9 for a, b in zip(gaps, gaps[1:]))  # approaches without overshoot
    assert net.radiator_temp_c == pytest.approx(t_ss_c, abs=1e-6)
    assert abs(net.energy_balance_error_j) < 1e-9 * net.heat_in_j


@pytest.mark.parametrize("field, value", [
    ("die_heat_capacity_j_k", 0.0), ("plate_heat_capacity_j_k", -1.0),
    ("radiator_heat_capacity_j_k", math.nan), ("die_to_plate_w_k", 0.0),
    ("plate_to_radiator_w_k", -3.0), ("radiator_area_m2", 0.0), ("radiator_emissivity", 0.0),
    ("radiator_emissivity", 1.2), ("radiator_absorptivity", -0.1),
    ("radiator_earth_view_factor", 1.5), ("initial_temp_c", -300.0),
])
def test_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        replace(BASE, **{field: value})


def test_bad_step_inputs_rejected():
    net = ThermalNetwork(BASE)
    with pytest.raises(ValueError, match="dt_s"):
        net.step(0.0, 1.0, 1.0, 1.0, 0.0, 300.0)
    with pytest.raises(ValueError, match="sunlit_fraction"):
        net.step(1.0, 1.0, 1.0, 2.0, 0.0, 300.0)
    with pytest.raises(ValueError, match="heat"):
        net.step(1.0, -1.0, 1.0, 1.0, 0.0, 300.0)
