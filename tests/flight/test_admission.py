"""Admission: never more than the allowance, never more than the frame, inference first."""

import math

import pytest
from hypothesis import given, settings, strategies as st

from flight.admission import GpuPerformanceModel, JobDemand, admit

MODEL = GpuPerformanceModel(idle_power_w=80.0, tdp_w=700.0, throughput_exponent=0.67)


def test_performance_model_by_hand():
    assert MODEL.throughput_fraction(700.0) == pytest.approx(1.0)
    assert MODEL.throughput_fraction(390.0) == pytest.approx(0.5**0.67)
    assert MODEL.throughput_fraction(80.0) == 0.0
    # 2 reference seconds at 390 W take 2 / 0.5**0.67 s and 390 W times that.
    assert MODEL.energy_wh(2.0, 390.0) == pytest.approx(390.0 * 2.0 / 0.5**0.67 / 3600.0)


def test_inference_outranks_training():
    demands = [JobDemand("training", "training", 10, math.inf), JobDemand("assistant", "inference", 1, 0.3)]
    grants = admit(demands, cap_w=700.0, frame_s=1.0, allowance_wh=700.0 / 3600.0,
                   permitted_kinds=("inference", "training"), model=MODEL)
    assert [g.name for g in grants] == ["assistant", "training"]
    assert grants[0].seconds == pytest.approx(0.3)  # at TDP one reference second is one second
    assert grants[1].seconds == pytest.approx(0.7)


def test_mode_permissions_and_short_allowance():
    demands = [JobDemand("training", "training", 10, math.inf)]
    assert admit(demands, cap_w=700.0, frame_s=1.0, allowance_wh=1.0, permitted_kinds=("inference",),
                 model=MODEL) == []
    # Half a frame's energy buys half the frame.
    (grant,) = admit(demands, cap_w=400.0, frame_s=1.0, allowance_wh=200.0 / 3600.0,
                     permitted_kinds=("training",), model=MODEL)
    assert grant.seconds == pytest.approx(0.5) and grant.energy_wh == pytest.approx(200.0 / 3600.0)


def test_bad_demands_are_refused():
    with pytest.raises(ValueError, match="job kind"):
        JobDemand("x", "mining", 1, 1.0)
    with pytest.raises(ValueError, match="work_ref_s"):
        JobDemand("x", "training", 1, float("nan"))


demand_strategy = st.builds(
    JobDemand,
    name=st.sampled_from(["a", "b", "c", "d"]),
    kind=st.sampled_from(["inference", "training"]),
    priority=st.integers(0, 20),
    work_ref_s=st.one_of(st.just(math.inf), st.floats(0.0, 20.0)),
)


@settings(max_examples=400, deadline=None)
@given(demands=st.lists(demand_strategy, max_size=4, unique_by=lambda d: d.name), cap_w=st.floats(81.0, 700.0),
       frame_s=st.floats(0.1, 10.0), allowance_wh=st.floats(0.0, 5.0),
       permitted=st.sampled_from([(), ("inference",), ("inference", "training")]))
def test_grants_never_exceed_the_allowance_or_the_frame(demands, cap_w, frame_s, allowance_wh, permitted):
    grants = admit(demands, cap_w=cap_w, frame_s=frame_s, allowance_wh=allowance_wh,
                   permitted_kinds=permitted, model=MODEL)
    assert sum(g.energy_wh for g in grants) <= allowance_wh * (1 + 1e-12) + 1e-15
    assert sum(g.seconds for g in grants) <= frame_s * (1 + 1e-12)
    demand = {d.name: d for d in demands}
    for g in grants:
        assert g.seconds > 0 and demand[g.name].kind in permitted
        assert g.work_ref_s <= demand[g.name].work_ref_s * (1 + 1e-12)  # never more than asked
    # Priority order: grants come in (priority, name) order, and a job is granted only after every
    # job before it got all the work it asked for.
    keys = [(demand[g.name].priority, g.name) for g in grants]
    assert keys == sorted(keys)
    for earlier in grants[:-1]:
        assert earlier.work_ref_s == pytest.approx(demand[earlier.name].work_ref_s, rel=1e-9)
