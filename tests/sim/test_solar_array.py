"""Solar array output against hand calculations."""

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from sim.solar_array import SolarArrayParams, array_power_w


def test_hand_computed_full_sun_at_1au():
    params = SolarArrayParams(area_m2=2.0, cell_efficiency=0.30, packing_factor=0.85)
    # 1361 W/m2 * 2 m2 = 2722 W of sunlight; * 0.30 = 816.6 W; * 0.85 = 694.11 W.
    assert array_power_w(params, 1.0, 1.0) == pytest.approx(694.11, rel=1e-12)


def test_pointing_cosine_and_penumbra_scale_linearly():
    params = SolarArrayParams(area_m2=2.0, cell_efficiency=0.30, pointing_cos=0.5)
    assert array_power_w(params, 1.0, 1.0) == pytest.approx(694.11 / 2, rel=1e-12)
    assert array_power_w(params, 0.25, 1.0) == pytest.approx(694.11 / 8, rel=1e-12)


def test_zero_in_umbra():
    params = SolarArrayParams(area_m2=5.0, cell_efficiency=0.29)
    assert array_power_w(params, 0.0, 1.0) == 0.0
    assert array_power_w(params, 0, 0.983) == 0.0


@given(st.floats(min_value=0.95, max_value=1.05))
def test_inverse_square_with_sun_distance(distance_au):
    params = SolarArrayParams(area_m2=3.0, cell_efficiency=0.28)
    at_1au_w = array_power_w(params, 1.0, 1.0)
    assert array_power_w(params, 1.0, distance_au) == pytest.approx(at_1au_w / distance_au**2,
                                                                    rel=1e-12)


def test_perihelion_aphelion_ratio():
    params = SolarArrayParams(area_m2=3.0, cell_efficiency=0.28)
    ratio = array_power_w(params, 1.0, 0.9833) / array_power_w(params, 1.0, 1.0167)
    assert ratio == pytest.approx((1.0167 / 0.9833) ** 2, rel=1e-12)  # ~6.9 % seasonal swing


def test_vectorized_matches_scalar():
    params = SolarArrayParams(area_m2=1.5, cell_efficiency=0.3)
    sunlit = np.array([0.0, 0.3, 1.0, 1.0])
    distance = np.array([1.0, 1.0, 0.99, 1.01])
    out = array_power_w(params, sunlit, distance)
    assert out.shape == (4,)
    for i in range(4):
        assert out[i] == pytest.approx(array_power_w(params, float(sunlit[i]), float(distance[i])),
                                       rel=1e-15)
    assert np.all(array_power_w(params, np.zeros(7), 1.0) == 0.0)


@pytest.mark.parametrize("field, value", [
    ("area_m2", 0.0), ("area_m2", -1.0), ("area_m2", math.nan),
    ("cell_efficiency", 0.0), ("cell_efficiency", 1.2),
    ("packing_factor", 0.0), ("packing_factor", 1.01),
    ("pointing_cos", -0.1), ("pointing_cos", 1.1),
])
def test_validation_names_the_field(field, value):
    kwargs = dict(area_m2=1.0, cell_efficiency=0.3)
    kwargs[field] = value
    with pytest.raises(ValueError, match=field):
        SolarArrayParams(**kwargs)


def test_bad_inputs_rejected():
    params = SolarArrayParams(area_m2=1.0, cell_efficiency=0.3)
    with pytest.raises(ValueError, match="sunlit_fraction"):
        array_power_w(params, 1.5, 1.0)
    with pytest.raises(ValueError, match="sun_distance_au"):
        array_power_w(params, 1.0, 0.0)
    with pytest.raises(ValueError, match="sunlit_fraction"):
        array_power_w(params, np.array([0.5, -0.1]), 1.0)
