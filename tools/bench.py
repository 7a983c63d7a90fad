"""`sunlit bench`: the numbers that matter, each measured in the same run as its baseline.

| key | figure | baseline |
| --- | --- | --- |
| sil_day_full_s | one day of starcloud1, whole flight stack, modeled compute, 1 s ticks | basilisk_day_s |
| sil_day_physics_s | the same day, world models alone (GPU busy at its maximum cap) | basilisk_day_s |
| basilisk_day_s | an equivalent Basilisk 2.12.1 day, ExecuteSimulation only (when installed) | |
| sil_day_floor_s, sil_day_floor_per_tick_s | the SIL's own messages replayed through raw pyzmq + msgpack into SQLite, no flight logic: one frame per message (Sunlit's contract), one per tick (tools.bench_floor) | basilisk_day_s |
| bus_ratio | messages/s through Publisher.publish + Subscription.drain | raw pyzmq + msgpack |
| cmd_rtt_p50_us, cmd_rtt_p99_us | command -> response over tcp loopback, stack in another process | raw pyzmq echo |
| train_overhead_ratio | training steps/s under the scheduler | Trainer.step in a tight loop |
| train_overhead_floor_ratio | what train_overhead_ratio would be if each SIL tick cost only its transport floor (sil_day_floor_s per tick), the job's evaluations and checkpoints as measured (needs floor and train) | |
| energy_vs_oracle | per preset, from tools.policies.energy_vs_oracle | the oracle |
| assistant_fact_accuracy | held-out dialogues: share of model answers whose facts pass the checker | the template |
| assistant_fact_accuracy_after_fallback | the same for what goes out (template where the model failed) | the template |
| assistant_answer_p50_ms, assistant_answer_p99_ms | one answer's generation on this host (tools.bench_assistant) | |
| assistant_train_tokens_per_s, assistant_loss_curve | fine-tuning throughput now; the shipped model's loss curve | |
| assistant_onboard_tokens_per_s, assistant_onboard_val_loss, assistant_onboard_fact_accuracy | the training job's assistant task: the shipped weights fine-tuned on 800 unseen dialogues (throughput, held-out masked loss before/after, accuracy as above) | the template |

The assistant's accuracy and latency are None when its weights file
(flight/assistant/data/assistant_gpt.pt) is not there.

This is wiring: it reads the wall clock. Nothing here asserts a time; the table marks goals.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

BENCHMARKS = ("sil", "physics", "basilisk", "floor", "bus", "cmd", "train", "energy", "assistant")
SCENARIO = "starcloud1"
ENERGY_PRESETS = ("starcloud1", "dawn-dusk-650")
BUS_RATIO_GOAL = 0.8
TRAIN_RATIO_GOAL = 0.97
ENERGY_RATIO_GOAL = 0.95
# Upper bounds: the whole stack may cost at most 3x, the world alone at most 1x, a C++ physics day.
FULL_VS_BASILISK_GOAL = 3.0
PHYSICS_VS_BASILISK_GOAL = 1.0
ASSISTANT_ACCURACY_GOAL = 0.99
ASSISTANT_AFTER_FALLBACK_GOAL = 1.0

FIGURE_KEYS = (
    "sil_day_full_s", "sil_day_physics_s", "basilisk_day_s", "full_vs_basilisk", "physics_vs_basilisk",
    "sil_day_floor_s", "sil_day_floor_per_tick_s", "floor_vs_basilisk", "floor_per_tick_vs_basilisk",
    "bus_ratio", "bus_sunlit_msgs_per_s", "bus_raw_msgs_per_s",
    "cmd_rtt_p50_us", "cmd_rtt_p99_us", "cmd_rtt_raw_p50_us", "cmd_rtt_raw_p99_us",
    "train_overhead_ratio", "train_sil_steps_per_s", "train_bare_steps_per_s", "train_overhead_floor_ratio",
    "energy_vs_oracle",
    "assistant_fact_accuracy", "assistant_fact_accuracy_after_fallback",
    "assistant_answer_p50_ms", "assistant_answer_p99_ms", "assistant_train_tokens_per_s", "assistant_loss_curve",
    "assistant_onboard_tokens_per_s", "assistant_onboard_val_loss", "assistant_onboard_fact_accuracy",
)


@dataclass(frozen=True)
class BenchSizes:
    sim_s: int
    floor_capture_ticks: int  # SIL ticks recorded for the transport floor's replay
    floor_replay_ticks: int
    bus_messages: int
    bus_batch: int
    round_trips: int
    rtt_warmup: int
    train_steps: int
    energy_s: int
    assistant_quick: bool  # tools.bench_assistant's quick sizes (20 held-out times, a tiny fine-tune)


FULL = BenchSizes(sim_s=86_400, floor_capture_ticks=5_760, floor_replay_ticks=86_400, bus_messages=200_000, bus_batch=2_000, round_trips=5_000, rtt_warmup=500,
                  train_steps=300, energy_s=86_400, assistant_quick=False)
QUICK = BenchSizes(sim_s=600, floor_capture_ticks=60, floor_replay_ticks=120, bus_messages=200, bus_batch=50, round_trips=50, rtt_warmup=10,
                   train_steps=5, energy_s=600, assistant_quick=True)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def _bench_sil(sizes: BenchSizes, out: dict, details: dict, notes: list[str], **_: Any) -> None:
    from tools.bench_sil import time_sil_full

    timing = time_sil_full(SCENARIO, sizes.sim_s)
    out["sil_day_full_s"] = timing.wall_s
    details["sil"] = {"scenario": timing.scenario, "sim_s": timing.sim_s, "wall_s": timing.wall_s,
                      "us_per_step": timing.us_per_step, "real_time_factor": timing.real_time_factor,
                      "telemetry_messages": timing.telemetry_messages, "bus_dropped": timing.bus_dropped}


def _bench_physics(sizes: BenchSizes, out: dict, details: dict, notes: list[str], **_: Any) -> None:
    from tools.bench_sil import time_world_physics

    timing = time_world_physics(SCENARIO, sizes.sim_s)
    out["sil_day_physics_s"] = timing.wall_s
    details["physics"] = {"scenario": timing.scenario, "sim_s": timing.sim_s, "wall_s": timing.wall_s,
                          "us_per_step": timing.us_per_step, "real_time_factor": timing.real_time_factor}


def _bench_basilisk(sizes: BenchSizes, out: dict, details: dict, notes: list[str],
                    basilisk_python: str | None = None, **_: Any) -> None:
    from tools.bench_basilisk import INSTALL_HINT, find_basilisk_python, time_basilisk_day

    python = find_basilisk_python(basilisk_python)
    if python is None:
        notes.append(INSTALL_HINT)
        return
    result = time_basilisk_day(SCENARIO, sizes.sim_s, python=python)
    out["basilisk_day_s"] = result["exec_s"]
    details["basilisk"] = result


def _bench_floor(sizes: BenchSizes, out: dict, details: dict, notes: list[str], **_: Any) -> None:
    from tools.bench_floor import measure_transport_floor

    floor = measure_transport_floor(SCENARIO, sizes.floor_capture_ticks, sizes.floor_replay_ticks)
    out["sil_day_floor_s"] = floor.timings["per_message"].day_s
    out["sil_day_floor_per_tick_s"] = floor.timings["per_tick"].day_s
    details["floor"] = {
        "scenario": floor.scenario, "capture_ticks": floor.capture_ticks,
        "messages_per_tick": floor.messages_per_tick, "subscriptions": floor.subscriptions,
        "deliveries_per_tick": floor.deliveries_per_tick,
        **{mode: {"replay_ticks": t.replay_ticks, "wall_s": t.wall_s, "us_per_tick": t.us_per_tick,
                  "frames_sent": t.frames_sent, "frames_received": t.frames_received,
                  "rows_stored": t.rows_stored} for mode, t in floor.timings.items()},
    }


def _bench_bus(sizes: BenchSizes, out: dict, details: dict, notes: list[str], **_: Any) -> None:
    from tools.bench_bus import measure_bus

    rates = measure_bus(sizes.bus_messages, sizes.bus_batch)
    out["bus_ratio"] = rates.ratio
    out["bus_sunlit_msgs_per_s"] = rates.sunlit_msgs_per_s
    out["bus_raw_msgs_per_s"] = rates.raw_msgs_per_s
    details["bus"] = {"frame_bytes": rates.frame_bytes, "rounds_per_side": rates.rounds,
                      "batch": rates.batch, "sunlit_dropped": rates.dropped, "transport": "inproc"}


def _bench_cmd(sizes: BenchSizes, out: dict, details: dict, notes: list[str], **_: Any) -> None:
    from tools.bench_cmd import measure_cmd_rtt, measure_raw_rtt

    raw = measure_raw_rtt(sizes.round_trips, sizes.rtt_warmup)
    stack = measure_cmd_rtt(sizes.round_trips, sizes.rtt_warmup)
    out["cmd_rtt_p50_us"] = stack.p50_us
    out["cmd_rtt_p99_us"] = stack.p99_us
    out["cmd_rtt_raw_p50_us"] = raw.p50_us
    out["cmd_rtt_raw_p99_us"] = raw.p99_us
    details["cmd"] = {"round_trips": len(stack.samples_us), "warmup": stack.warmup,
                      "transport": "tcp://127.0.0.1", "stack": stack.server,
                      "handshake_noops": stack.handshake_sends,
                      # sent before the tcp links were up (slow joiners): the stack's drop count
                      "handshake_noops_lost": stack.handshake_sends - (stack.server["accepted"] - stack.warmup
                                                                       - len(stack.samples_us)),
                      "mean_us": sum(stack.samples_us) / len(stack.samples_us),
                      "max_us": max(stack.samples_us), "raw_mean_us": sum(raw.samples_us) / len(raw.samples_us)}


def _bench_train(sizes: BenchSizes, out: dict, details: dict, notes: list[str], **_: Any) -> None:
    from tools.bench_train import measure_train_overhead

    result = measure_train_overhead(SCENARIO, sizes.train_steps)
    out["train_overhead_ratio"] = result.ratio
    out["train_sil_steps_per_s"] = result.sil_steps_per_s
    out["train_bare_steps_per_s"] = result.bare_steps_per_s
    details["train"] = {"sil_steps": result.sil_steps, "sil_wall_s": result.sil_wall_s,
                        "bare_steps": result.bare_steps, "bare_wall_s": result.bare_wall_s,
                        "sil_checkpoints": result.sil_checkpoints, "sil_ticks": result.sil_ticks,
                        "sil_evaluate_wall_s": result.sil_evaluate_wall_s,
                        "sil_checkpoint_wall_s": result.sil_checkpoint_wall_s,
                        "num_threads": result.num_threads,
                        "median_pair_ratio": result.median_pair_ratio, "interleave": "step by step"}


def _train_floor_ratio(details: dict) -> float | None:
    """The training ratio if every counted SIL tick cost only the transport floor's mean tick and the
    step itself what a bare step costs: an upper bound for train_overhead_ratio on this machine."""
    train, floor = details.get("train"), details.get("floor")
    if train is None or floor is None or not train["sil_steps"] or not train["bare_steps"]:
        return None
    bare_step_s = train["bare_wall_s"] / train["bare_steps"]
    per_step_s = (train["sil_evaluate_wall_s"] + train["sil_checkpoint_wall_s"]
                  + train["sil_ticks"] * floor["per_message"]["us_per_tick"] * 1e-6) / train["sil_steps"]
    return bare_step_s / (bare_step_s + per_step_s)


def _floor_notes(out: dict) -> list[str]:
    """Say so when a goal is past what the transport floor alone allows on this machine."""
    notes = []
    floor, batched = out["floor_vs_basilisk"], out["floor_per_tick_vs_basilisk"]
    if floor is not None and batched is not None and min(floor, batched) > FULL_VS_BASILISK_GOAL:
        notes.append(f"full_vs_basilisk <= {FULL_VS_BASILISK_GOAL:g} is out of reach here: the day's messages "
                     f"alone, over ZeroMQ into SQLite with no flight logic, take {floor:.1f}x Basilisk "
                     f"({batched:.1f}x with one frame per tick)")
    bound = out["train_overhead_floor_ratio"]
    if bound is not None and bound < TRAIN_RATIO_GOAL:
        notes.append(f"train_overhead_ratio >= {TRAIN_RATIO_GOAL:g} is out of reach here: with every tick at "
                     f"its transport floor and the job's evaluations and checkpoints it would be {bound:.3f}")
    return notes


def _bench_energy(sizes: BenchSizes, out: dict, details: dict, notes: list[str], **_: Any) -> None:
    try:
        from tools.policies import energy_vs_oracle
    except ModuleNotFoundError as exc:
        if exc.name != "tools.policies":
            raise
        notes.append("energy_vs_oracle: tools.policies is not there yet")
        return
    results = {preset: energy_vs_oracle(preset, duration_s=sizes.energy_s) for preset in ENERGY_PRESETS}
    out["energy_vs_oracle"] = {preset: float(r["ratio"]) for preset, r in results.items()}
    details["energy"] = {"duration_s": sizes.energy_s, **results}


def _bench_assistant(sizes: BenchSizes, out: dict, details: dict, notes: list[str], **_: Any) -> None:
    from tools.bench_assistant import measure_assistant

    result = measure_assistant(quick=sizes.assistant_quick)
    for key in FIGURE_KEYS:
        if key.startswith("assistant_"):
            out[key] = result[key]
    if out["assistant_loss_curve"] is not None:
        out["assistant_loss_curve"] = [list(point) for point in out["assistant_loss_curve"]]
    details["assistant"] = result["details"]
    notes += [f"assistant: {note}" for note in result["details"].get("notes", [])]


_RUNNERS: dict[str, Callable[..., None]] = {
    "sil": _bench_sil, "physics": _bench_physics, "basilisk": _bench_basilisk, "floor": _bench_floor,
    "bus": _bench_bus,
    "cmd": _bench_cmd, "train": _bench_train, "energy": _bench_energy, "assistant": _bench_assistant,
}


def _machine() -> dict[str, Any]:
    import torch

    from sim.scenario import load_scenario

    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "trainer_threads": load_scenario(SCENARIO).training["num_threads"],
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }


def run_benchmarks(quick: bool = False, only: list[str] | None = None,
                   basilisk_python: str | None = None,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the selected benchmarks (all by default) and return the JSON-ready result."""
    selected = list(BENCHMARKS) if not only else list(dict.fromkeys(only))
    unknown = [name for name in selected if name not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    sizes = QUICK if quick else FULL
    out: dict[str, Any] = {key: None for key in FIGURE_KEYS}
    details: dict[str, Any] = {}
    notes: list[str] = []
    load_before = os.getloadavg()
    started = time.perf_counter()
    wall_s: dict[str, float] = {}
    for name in selected:
        if progress is not None:
            progress(name)
        t0 = time.perf_counter()
        _RUNNERS[name](sizes, out, details, notes, basilisk_python=basilisk_python)
        wall_s[name] = time.perf_counter() - t0
    out["full_vs_basilisk"] = _ratio(out["sil_day_full_s"], out["basilisk_day_s"])
    out["physics_vs_basilisk"] = _ratio(out["sil_day_physics_s"], out["basilisk_day_s"])
    out["floor_vs_basilisk"] = _ratio(out["sil_day_floor_s"], out["basilisk_day_s"])
    out["floor_per_tick_vs_basilisk"] = _ratio(out["sil_day_floor_per_tick_s"], out["basilisk_day_s"])
    out["train_overhead_floor_ratio"] = _train_floor_ratio(details)
    notes += _floor_notes(out)
    machine = _machine()
    machine["load_avg_before"] = list(load_before)
    machine["load_avg_after"] = list(os.getloadavg())
    return {
        **out,
        "timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "benchmarks": selected,
        "sizes": sizes.__dict__,
        "machine": machine,
        "bench_wall_s": {**wall_s, "total": time.perf_counter() - started},
        "details": details,
        "notes": notes,
    }


# --------------------------------------------------------------------------- table


def _num(value: float | None, unit: str = "", digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}{unit}"
    return f"{value:.{digits}g}{unit}"


def _share(value: float | None) -> str:
    """A share as a percentage with enough digits that 99.96 % does not read as 100 %."""
    return "n/a" if value is None else f"{100 * value:.2f} %"


@dataclass(frozen=True)
class AtMost:
    """A goal that is an upper bound (the others are lower bounds)."""

    bound: float


def _goal_cell(value: float | None, goal: float | None, at_most: bool = False) -> tuple[str, str]:
    if goal is None:
        return "-", ""
    text = f"{'<=' if at_most else '>='} {goal:g}"
    if value is None:
        return text, "not run"
    met = value <= goal if at_most else value >= goal
    return text, "met" if met else "NOT MET"


def format_table(result: dict[str, Any]) -> str:
    """The human summary: each figure, its baseline, the ratio and the goal."""
    r = result
    sim_s = r["sizes"]["sim_s"]
    day = "day" if sim_s == 86_400 else f"{sim_s} s"
    rows: list[tuple[str, str, str, str, float | None, float | AtMost | None]] = [
        (f"SIL {day}, whole flight stack", _num(r["sil_day_full_s"], " s"), "Basilisk",
         _num(r["basilisk_day_s"], " s"), r["full_vs_basilisk"], AtMost(FULL_VS_BASILISK_GOAL)),
        (f"SIL {day}, world models alone", _num(r["sil_day_physics_s"], " s"), "Basilisk",
         _num(r["basilisk_day_s"], " s"), r["physics_vs_basilisk"], AtMost(PHYSICS_VS_BASILISK_GOAL)),
        # What the whole stack's day cannot go below in Python: its messages over ZeroMQ into SQLite.
        ("its messages alone, frame per message", _num(r["sil_day_floor_s"], " s"), "Basilisk",
         _num(r["basilisk_day_s"], " s"), r["floor_vs_basilisk"], None),
        ("its messages alone, frame per tick", _num(r["sil_day_floor_per_tick_s"], " s"), "Basilisk",
         _num(r["basilisk_day_s"], " s"), r["floor_per_tick_vs_basilisk"], None),
        ("bus throughput (inproc)", _num(r["bus_sunlit_msgs_per_s"], " msg/s"), "raw pyzmq+msgpack",
         _num(r["bus_raw_msgs_per_s"], " msg/s"), r["bus_ratio"], BUS_RATIO_GOAL),
        ("command RTT p50 (tcp)", _num(r["cmd_rtt_p50_us"], " us"), "raw pyzmq echo",
         _num(r["cmd_rtt_raw_p50_us"], " us"), _ratio(r["cmd_rtt_p50_us"], r["cmd_rtt_raw_p50_us"]), None),
        ("command RTT p99 (tcp)", _num(r["cmd_rtt_p99_us"], " us"), "raw pyzmq echo",
         _num(r["cmd_rtt_raw_p99_us"], " us"), _ratio(r["cmd_rtt_p99_us"], r["cmd_rtt_raw_p99_us"]), None),
        ("training under the scheduler", _num(r["train_sil_steps_per_s"], " step/s"), "bare Trainer.step",
         _num(r["train_bare_steps_per_s"], " step/s"), r["train_overhead_ratio"], TRAIN_RATIO_GOAL),
        # Its bound: each tick at the transport floor, evaluations and checkpoints as measured.
        ("training, ticks at their floor", "", "bare Trainer.step", "", r["train_overhead_floor_ratio"], None),
    ]
    energy = r["energy_vs_oracle"]
    for preset in ENERGY_PRESETS:
        ratio = None if energy is None else energy.get(preset)
        rows.append((f"energy vs oracle, {preset}", "", "oracle", "", ratio, ENERGY_RATIO_GOAL))
    # The assistant's accuracy is a share of answers whose facts agree with the template's: its ratio.
    rows += [
        ("assistant fact accuracy (held-out)", _share(r["assistant_fact_accuracy"]), "template facts", "",
         r["assistant_fact_accuracy"], ASSISTANT_ACCURACY_GOAL),
        ("assistant accuracy after fallback", _share(r["assistant_fact_accuracy_after_fallback"]), "template facts",
         "", r["assistant_fact_accuracy_after_fallback"], ASSISTANT_AFTER_FALLBACK_GOAL),
        ("assistant answer p50 / p99", f"{_num(r['assistant_answer_p50_ms'])} / "
         f"{_num(r['assistant_answer_p99_ms'], ' ms')}", "", "", None, None),
        ("assistant fine-tuning", _num(r["assistant_train_tokens_per_s"], " tok/s"), "", "", None, None),
        ("assistant fine-tuned on board", _num(r["assistant_onboard_tokens_per_s"], " tok/s"), "", "", None, None),
        ("its fact accuracy (held-out)", _share(r["assistant_onboard_fact_accuracy"]), "template facts", "",
         r["assistant_onboard_fact_accuracy"], None),
    ]
    header = ("figure", "value", "baseline", "baseline value", "ratio", "goal", "")
    cells = [header]
    for name, value, base_name, base_value, ratio, goal in rows:
        at_most = isinstance(goal, AtMost)
        goal_text, verdict = _goal_cell(ratio, goal.bound if at_most else goal, at_most=at_most)
        cells.append((name, value, base_name, base_value, _num(ratio), goal_text, verdict))
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [f"Sunlit bench{' (quick sizes)' if r['quick'] else ''}, {r['timestamp_utc']}"]
    for i, row in enumerate(cells):
        lines.append("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("  " + "  ".join("-" * width for width in widths))
    m = r["machine"]
    lines.append(f"  machine: {m['cpu_count']} CPUs, torch {m['torch_threads']} threads, Python {m['python']}, "
                 f"load {m['load_avg_before'][0]:.2f} -> {m['load_avg_after'][0]:.2f}")
    lines += [f"  note: {note}" for note in r["notes"]]
    return "\n".join(lines)


def write_json(result: dict[str, Any], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")


def main(quick: bool = False, only: list[str] | None = None, json_path: Path | None = None,
         basilisk_python: str | None = None) -> int:
    def progress(name: str) -> None:
        print(f"  running {name} ...", file=sys.stderr, flush=True)

    result = run_benchmarks(quick=quick, only=only, basilisk_python=basilisk_python, progress=progress)
    print(format_table(result))
    if json_path is not None:
        write_json(result, json_path)
        print(f"  wrote {json_path}")
    return 0
