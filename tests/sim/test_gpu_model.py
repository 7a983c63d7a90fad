"""H100 plant model: throughput curve properties, boot/off/thermal behaviour by hand."""

import math

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from sim.gpu_model import GpuParams, GpuPlant, step_time_ratio, throughput_fraction

P = GpuParams()
caps = st.floats(P.min_cap_w, P.max_cap_w)
exponents = st.floats(0.05, 1.0)


def booted(params: GpuParams = P) -> GpuPlant:
    gpu = GpuPlant(params)
    gpu.set_rail(True)
    gpu.step(params.boot_time_s, 40.0)
    assert gpu.state == "idle"
    return gpu


@given(caps, caps, exponents)
def test_throughput_is_increasing(a, b, gamma):
    params = GpuParams(throughput_exponent=gamma)
    lo, hi = min(a, b), max(a, b)
    assert throughput_fraction(params, lo) <= throughput_fraction(params, hi)
    assume(hi - lo > 1.0)
    assert throughput_fraction(params, lo) < throughput_fraction(params, hi)


@given(caps, caps, st.floats(0.0, 1.0), exponents)
def test_throughput_is_concave(a, b, weight, gamma):
    params = GpuParams(throughput_exponent=gamma)
    mix = weight * a + (1.0 - weight) * b
    chord = weight * throughput_fraction(params, a) + (1.0 - weight) * throughput_fraction(params, b)
    assert throughput_fraction(params, mix) >= chord - 1e-12


def test_throughput_endpoints_and_vectorized():
    assert throughput_fraction(P, P.tdp_w) == 1.0
    assert throughput_fraction(P, P.idle_power_w) == 0.0
    assert 0.0 < throughput_fraction(P, P.min_cap_w) < 1.0
    cap_w = np.linspace(P.min_cap_w, P.max_cap_w, 11)
    out = throughput_fraction(P, cap_w)
    assert out.shape == (11,)
    for c, f in zip(cap_w, out):
        assert f == pytest.approx(throughput_fraction(P, float(c)), rel=1e-15)


def test_600w_step_time_is_10_to_15_percent_longer_than_700w():
    ratio = step_time_ratio(P, 600.0) / step_time_ratio(P, 700.0)
    assert 1.10 <= ratio <= 1.15


@pytest.mark.parametrize("cap_w", [199.9, 700.1, 50.0, math.nan])
def test_cap_outside_range_rejected_with_the_range(cap_w):
    gpu = booted()
    with pytest.raises(ValueError, match=r"200 W and 700 W"):
        gpu.set_power_cap_w(cap_w)
    assert gpu.power_cap_w == 700.0


@pytest.mark.parametrize("overrides, field", [
    (dict(idle_power_w=250.0), "min_cap_w"), (dict(max_cap_w=150.0), "max_cap_w"),
    (dict(max_cap_w=800.0), "max_cap_w"), (dict(throughput_exponent=0.0), "throughput_exponent"),
    (dict(throughput_exponent=1.5), "throughput_exponent"), (dict(boot_time_s=-1.0), "boot_time_s"),
    (dict(slowdown_temp_c=95.0), "slowdown_temp_c"), (dict(idle_power_w=math.nan), "idle_power_w"),
])
def test_params_validation(overrides, field):
    with pytest.raises(ValueError, match=field):
        GpuParams(**overrides)


def test_boot_end_inside_a_step_is_accounted_exactly():
    gpu = GpuPlant(P)  # boot_time_s = 30
    assert gpu.step(10.0, 30.0) == 0.0 and gpu.state == "off"
    gpu.set_rail(True)
    gpu.set_power_cap_w(500.0)
    gpu.set_busy(True)  # kept while booting
    assert gpu.state == "booting"
    # 0..20 s: booting at idle power, no work.
    assert gpu.step(20.0, 30.0) == pytest.approx(80.0)
    assert gpu.take_work_ref_s() == 0.0 and gpu.state == "booting"
    # 20..40 s: 10 s more booting at 80 W, then 10 s busy at the 500 W cap.
    assert gpu.step(20.0, 30.0) == pytest.approx((10.0 * 80.0 + 10.0 * 500.0) / 20.0)
    assert gpu.power_w == pytest.approx(290.0)
    assert gpu.state == "busy"
    work = gpu.take_work_ref_s()
    assert work == pytest.approx(10.0 * ((500.0 - 80.0) / (700.0 - 80.0)) ** 0.67, rel=1e-12)
    assert gpu.take_work_ref_s() == 0.0
    # A full busy step at 700 W does one reference second of work per second.
    gpu.set_power_cap_w(700.0)
    assert gpu.step(5.0, 30.0) == 700.0
    assert gpu.take_work_ref_s() == pytest.approx(5.0, rel=1e-15)


def test_idle_and_busy_power():
    gpu = booted()
    assert gpu.step(1.0, 40.0) == 80.0 and gpu.take_work_ref_s() == 0.0
    gpu.set_power_cap_w(350.0)
    gpu.set_busy(True)
    assert gpu.state == "busy"
    assert gpu.step(2.0, 40.0) == 350.0
    assert gpu.take_work_ref_s() == pytest.approx(2.0 * (270.0 / 620.0) ** 0.67, rel=1e-12)
    gpu.set_busy(False)
    assert gpu.state == "idle" and gpu.step(1.0, 40.0) == 80.0


def test_off_drops_all_state_and_counts_cycles():
    gpu = booted()
    assert gpu.on_off_cycles == 1
    gpu.set_power_cap_w(300.0)
    gpu.set_busy(True)
    gpu.set_rail(True)  # already on: not a new cycle
    assert gpu.on_off_cycles == 1
    gpu.set_rail(False)
    assert gpu.state == "off"
    assert gpu.power_cap_w == 700.0  # NVML limits do not survive a power cycle
    assert gpu.step(10.0, 40.0) == 0.0 and gpu.power_w == 0.0
    gpu.set_busy(True)  # ignored while off
    assert gpu.state == "off" and not gpu.busy_requested
    gpu.set_rail(True)
    assert gpu.on_off_cycles == 2 and gpu.state == "booting"
    gpu.step(15.0, 40.0)
    gpu.set_rail(False)  # off mid-boot: boot progress is lost
    gpu.set_rail(True)
    assert gpu.on_off_cycles == 3 and gpu.boot_remaining_s == 30.0
    gpu.step(30.0, 40.0)
    assert gpu.state == "idle"  # the busy request from before the power cycle is gone


def test_thermal_shutdown_trips_off_and_needs_a_new_power_on():
    gpu = booted()
    gpu.set_busy(True)
    assert gpu.step(1.0, 91.9) > 0.0
    assert gpu.step(1.0, 92.0) == 0.0
    assert gpu.state == "off" and gpu.thermal_trips == 1
    assert gpu.take_work_ref_s() > 0.0  # only the work before the trip
    assert gpu.step(1.0, 30.0) == 0.0 and gpu.take_work_ref_s() == 0.0
    gpu.set_rail(True)
    assert gpu.state == "booting" and gpu.on_off_cycles == 2 and gpu.thermal_trips == 1


def test_slowdown_reduces_power_and_throughput():
    gpu = booted()
    gpu.set_power_cap_w(600.0)
    gpu.set_busy(True)
    assert gpu.step(1.0, 87.0) == 600.0 and not gpu.thermally_throttled
    gpu.take_work_ref_s()
    # Half-way from slowdown (87) to shutdown (92): the limit is half-way from 600 W to 200 W.
    assert gpu.step(1.0, 89.5) == pytest.approx(400.0)
    assert gpu.thermally_throttled
    assert gpu.take_work_ref_s() == pytest.approx((320.0 / 620.0) ** 0.67, rel=1e-12)
    assert gpu.step(1.0, 91.99) >= 200.0
    assert gpu.power_cap_w == 600.0  # the commanded cap is unchanged


def test_zero_boot_time_goes_straight_to_idle():
    gpu = GpuPlant(GpuParams(boot_time_s=0.0))
    gpu.set_rail(True)
    assert gpu.state == "idle" and gpu.on_off_cycles == 1
