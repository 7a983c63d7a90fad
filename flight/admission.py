"""Energy-aware admission of payload work.

Each frame the power manager grants an energy allowance; payload jobs declare the work they want
(in reference seconds: seconds of work at full-TDP throughput) with a kind and a priority. The GPU
performance model turns work into time and energy at the frame's cap. Jobs are admitted in
priority order (inference before training) while both the frame's time and the energy allowance
last: the grants never add up to more energy than the allowance, nor to more time than the frame.

The performance model here is the flight software's own belief about its GPU (calibrated on the
ground), deliberately separate from the simulator's truth in ``sim/gpu_model.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

KINDS = ("inference", "training")


@dataclass(frozen=True)
class GpuPerformanceModel:
    idle_power_w: float = 80.0
    tdp_w: float = 700.0
    throughput_exponent: float = 0.67

    def throughput_fraction(self, cap_w: float) -> float:
        """Work per second at cap_w relative to full TDP: ((cap - idle)/(tdp - idle))**gamma."""
        if cap_w <= self.idle_power_w:
            return 0.0
        return min(1.0, (cap_w - self.idle_power_w) / (self.tdp_w - self.idle_power_w)) ** self.throughput_exponent

    def duration_s(self, work_ref_s: float, cap_w: float) -> float:
        fraction = self.throughput_fraction(cap_w)
        return math.inf if fraction == 0.0 else work_ref_s / fraction

    def energy_wh(self, work_ref_s: float, cap_w: float) -> float:
        """Energy to do work_ref_s at cap_w: a busy GPU draws its cap."""
        return cap_w * self.duration_s(work_ref_s, cap_w) / 3600.0


@dataclass(frozen=True)
class JobDemand:
    name: str
    kind: str
    priority: int  # lower runs first
    work_ref_s: float  # work wanted this frame; math.inf: as much as it can get

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"job kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not self.work_ref_s >= 0.0:
            raise ValueError(f"work_ref_s must be >= 0, got {self.work_ref_s!r}")


@dataclass(frozen=True)
class Grant:
    name: str
    seconds: float
    work_ref_s: float
    energy_wh: float


def is_granted(power_message, job: str) -> bool:
    """Whether the power manager's latest ``tlm.power`` message grants ``job`` GPU time this frame."""
    grants = power_message.body.get("grants") if power_message is not None else None
    return isinstance(grants, dict) and (grants.get(job) or 0) > 0


def admit(demands: Iterable[JobDemand], *, cap_w: float, frame_s: float, allowance_wh: float,
          permitted_kinds: Iterable[str], model: GpuPerformanceModel) -> list[Grant]:
    """Grants in admission order; jobs that get nothing are left out."""
    permitted = set(permitted_kinds)
    fraction = model.throughput_fraction(cap_w)
    if fraction <= 0.0 or allowance_wh <= 0.0 or frame_s <= 0.0:
        return []
    # The GPU can be busy for at most the frame, and for no longer than the allowance pays for.
    seconds_left = min(frame_s, allowance_wh * 3600.0 / cap_w)
    grants: list[Grant] = []
    for demand in sorted(demands, key=lambda d: (d.priority, d.name)):
        if demand.kind not in permitted or demand.work_ref_s <= 0.0 or seconds_left <= 0.0:
            continue
        seconds = min(demand.work_ref_s / fraction, seconds_left)
        seconds_left -= seconds
        grants.append(Grant(demand.name, seconds, seconds * fraction, cap_w * seconds / 3600.0))
    return grants
