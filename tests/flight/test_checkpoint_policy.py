"""Young's and Daly's checkpoint intervals against hand calculations and their known properties."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flight.checkpoint_policy import (
    GROUND_H100_INTERRUPTIONS_PER_GPU_DAY,
    SAA_INTERRUPTION_FACTOR,
    daly_interval_s,
    interval_steps,
    mtbi_s,
    young_interval_s,
)

costs = st.floats(min_value=1e-3, max_value=1e4)
mtbis = st.floats(min_value=1.0, max_value=1e9)


def test_young_by_hand():
    # sqrt(2 * 10 s * 3600 s) = sqrt(72000) = 268.328 s
    assert young_interval_s(10.0, 3600.0) == pytest.approx(268.328, abs=1e-3)
    # sqrt(2 * 60 * 86400) = sqrt(10_368_000) = 3219.94 s
    assert young_interval_s(60.0, 86400.0) == pytest.approx(3219.94, abs=1e-2)


def test_daly_by_hand():
    # C/2M = 10/7200 = 0.00138889; sqrt = 0.0372678
    # 268.328 * (1 + 0.0372678/3 + 0.00138889/9) - 10 = 268.328 * 1.0125769 - 10 = 261.703 s
    assert daly_interval_s(10.0, 3600.0) == pytest.approx(261.703, abs=1e-3)
    # C = M = 100: C/2M = 0.5; sqrt(20000) * (1 + 0.707107/3 + 0.5/9) - 100
    #            = 141.421 * 1.291258 - 100 = 82.611 s
    assert daly_interval_s(100.0, 100.0) == pytest.approx(82.611, abs=1e-3)


def test_daly_is_the_mtbi_once_the_checkpoint_costs_two_of_them():
    assert daly_interval_s(200.0, 100.0) == 100.0
    assert daly_interval_s(1000.0, 100.0) == 100.0
    # Just below C = 2M the formula gives 8M/9: Daly's piecewise rule jumps there (to M).
    assert daly_interval_s(199.999999, 100.0) == pytest.approx(800.0 / 9.0, rel=1e-6)


def test_mtbi_from_the_rates_by_hand():
    # 4.7e-4 per day: 86400 / 4.7e-4 = 1.838e8 s (5.8 years); x20 in the SAA: 9.19e6 s.
    assert mtbi_s(GROUND_H100_INTERRUPTIONS_PER_GPU_DAY) == pytest.approx(1.8383e8, rel=1e-4)
    assert mtbi_s(GROUND_H100_INTERRUPTIONS_PER_GPU_DAY, in_saa=True) == pytest.approx(9.1915e6, rel=1e-4)
    assert SAA_INTERRUPTION_FACTOR == 20.0
    assert mtbi_s(24.0) == 3600.0
    assert mtbi_s(24.0, in_saa=True, saa_factor=4.0) == 900.0
    assert mtbi_s(24.0, in_saa=False, saa_factor=4.0) == 3600.0


def test_interval_in_steps_rounds_down_and_is_at_least_one():
    assert interval_steps(261.703, 4.0) == 65
    assert interval_steps(800.0, 4.0) == 200
    assert interval_steps(1.0, 4.0) == 1


@pytest.mark.parametrize("call", [
    lambda: young_interval_s(0.0, 10.0), lambda: daly_interval_s(1.0, -1.0), lambda: mtbi_s(0.0),
    lambda: interval_steps(10.0, 0.0), lambda: young_interval_s(math.nan, 10.0), lambda: mtbi_s(1.0, True, 0.0),
])
def test_bad_inputs_are_rejected(call):
    with pytest.raises(ValueError, match="must be a finite number > 0"):
        call()


@given(costs, costs, mtbis)
def test_both_grow_with_the_checkpoint_cost(c1, c2, m):
    lo, hi = sorted((c1, c2))
    assert young_interval_s(lo, m) <= young_interval_s(hi, m)
    assert daly_interval_s(lo, m) <= daly_interval_s(hi, m)  # also across the jump at C = 2M


@given(costs, mtbis, mtbis)
def test_both_grow_with_the_mtbi(c, m1, m2):
    lo, hi = sorted((m1, m2))
    assert young_interval_s(c, lo) <= young_interval_s(c, hi)
    if c < 2.0 * lo:  # within the formula's range; at C = 2M its piecewise rule jumps
        assert daly_interval_s(c, lo) <= daly_interval_s(c, hi) * (1 + 1e-12)


@given(costs, mtbis)
def test_daly_is_below_young_while_the_cost_is_below_two_mtbi(c, m):
    if c < 2.0 * m:
        assert daly_interval_s(c, m) <= young_interval_s(c, m)


@given(st.floats(min_value=1e-3, max_value=1e3))
def test_daly_tends_to_young_as_the_cost_becomes_small(c):
    # Relative gap is 2u/3 - u^2/9 with u = sqrt(C/2M): below 1e-3 once C/M < 4.5e-6.
    m = c * 1e7
    assert daly_interval_s(c, m) / young_interval_s(c, m) == pytest.approx(1.0, abs=1e-3)
    ratios = [daly_interval_s(c, c * k) / young_interval_s(c, c * k) for k in (10.0, 1e3, 1e5, 1e7)]
    assert ratios == sorted(ratios)  # monotonically closer to 1 as C/M falls
