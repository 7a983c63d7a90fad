"""How often to checkpoint training: Young's and Daly's optimum intervals, pure functions.

A checkpoint costs C seconds of training; an unpredictable interruption (a radiation upset that
resets the GPU) loses on average half the work since the last checkpoint. With interruptions
arriving as a Poisson process of mean spacing M, the interval that minimises the expected waste is

* Young (1974), first order:   tau = sqrt(2 C M)
* Daly (2006), higher order:   tau = sqrt(2 C M) * [1 + (1/3) sqrt(C / 2M) + (1/9) (C / 2M)] - C
                               for C < 2M, and tau = M for C >= 2M (Daly's own piecewise rule;
                               it jumps from 8M/9 up to M at C = 2M).

(J. W. Young, "A first order approximation to the optimum checkpoint interval", CACM 17(9), 1974;
J. T. Daly, "A higher order estimate of the optimum checkpoint interval for restart dumps",
FGCS 22(3), 2006.) tau is work time between the end of one checkpoint and the start of the next.

Only unpredictable interruptions belong in M. Predictable ones (eclipse entry, SAA entry, a low
battery) are forecast, and the training job checkpoints just before them instead.

Default rates, from /work/shared/reference/domain-facts.md:
* 4.7e-4 unplanned interruptions per GPU-day: the Llama 3 run on 16,384 ground H100s
  (419 in 54 days) [derived there]; no on-orbit H100 rate is published, so this is the floor.
* x20 inside the South Atlantic Anomaly: the in-SAA upset rate is estimated at 10-50x the
  background (default 20x) [derived/uncertain there].
"""

from __future__ import annotations

import math

SECONDS_PER_DAY = 86_400.0
# Llama 3 405B: 419 unplanned interruptions / (16,384 H100 x 54 days).
GROUND_H100_INTERRUPTIONS_PER_GPU_DAY = 4.7e-4
# Upset rate inside the SAA relative to outside it (domain facts: 10-50x, default 20x).
SAA_INTERRUPTION_FACTOR = 20.0

POLICIES = ("young_daly", "fixed")


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def young_interval_s(checkpoint_cost_s: float, mtbi_s: float) -> float:
    """Young's first-order optimum: sqrt(2 C M)."""
    _check_positive(checkpoint_cost_s=checkpoint_cost_s, mtbi_s=mtbi_s)
    return math.sqrt(2.0 * checkpoint_cost_s * mtbi_s)


def daly_interval_s(checkpoint_cost_s: float, mtbi_s: float) -> float:
    """Daly's higher-order optimum (see the module docstring); always <= Young's for C < 2M."""
    _check_positive(checkpoint_cost_s=checkpoint_cost_s, mtbi_s=mtbi_s)
    c, m = checkpoint_cost_s, mtbi_s
    if c >= 2.0 * m:
        return m
    ratio = c / (2.0 * m)
    return math.sqrt(2.0 * c * m) * (1.0 + math.sqrt(ratio) / 3.0 + ratio / 9.0) - c


def mtbi_s(interruptions_per_day: float, in_saa: bool = False,
           saa_factor: float = SAA_INTERRUPTION_FACTOR) -> float:
    """Mean time between unpredictable interruptions, seconds, at the current rate."""
    _check_positive(interruptions_per_day=interruptions_per_day, saa_factor=saa_factor)
    rate_per_day = interruptions_per_day * (saa_factor if in_saa else 1.0)
    return SECONDS_PER_DAY / rate_per_day


def interval_steps(interval_s: float, step_time_s: float) -> int:
    """The interval in whole training steps (rounded down: never later than the optimum), at least 1."""
    _check_positive(interval_s=interval_s, step_time_s=step_time_s)
    return max(1, math.floor(interval_s / step_time_s))
