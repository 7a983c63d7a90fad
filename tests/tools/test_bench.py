"""`sunlit bench`: every benchmark runs at the quick size and reports well-formed figures.

No timing is asserted: only that each figure is a positive finite number (or null where the
bench allows it), that ratios are the quotients of the figures they relate, and that the table
and the JSON say the same thing.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from datetime import datetime

import pytest

from flight.assistant.model import default_weights_path
from tools.bench import (
    BENCHMARKS,
    ENERGY_PRESETS,
    FIGURE_KEYS,
    QUICK,
    format_table,
    run_benchmarks,
)
from tools.cli import main

ALWAYS_MEASURED = (
    "sil_day_full_s", "sil_day_physics_s", "sil_day_floor_s", "sil_day_floor_per_tick_s",
    "bus_ratio", "bus_sunlit_msgs_per_s", "bus_raw_msgs_per_s",
    "cmd_rtt_p50_us", "cmd_rtt_p99_us", "cmd_rtt_raw_p50_us", "cmd_rtt_raw_p99_us",
    "train_overhead_ratio", "train_sil_steps_per_s", "train_bare_steps_per_s",
    "assistant_train_tokens_per_s",
)
NULLABLE = ("basilisk_day_s", "full_vs_basilisk", "physics_vs_basilisk", "floor_vs_basilisk",
            "floor_per_tick_vs_basilisk", "energy_vs_oracle", "train_overhead_floor_ratio")
# Measured on the shipped assistant model: None exactly when its weights file is not there.
NEEDS_WEIGHTS = ("assistant_fact_accuracy", "assistant_fact_accuracy_after_fallback",
                 "assistant_answer_p50_ms", "assistant_answer_p99_ms")
CURVES = ("assistant_loss_curve",)
# The shipped weights fine-tuned by the onboard task: None exactly when the weights are not there.
ONBOARD = ("assistant_onboard_tokens_per_s", "assistant_onboard_val_loss", "assistant_onboard_fact_accuracy")


def positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One quick run of every benchmark through the CLI; returns (JSON, printed table)."""
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SUNLIT_BASILISK_PYTHON", raising=False)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert main(["bench", "--quick", "--json", str(path)]) == 0
    return json.loads(path.read_text()), printed.getvalue()


def test_every_key_is_there_and_well_formed(quick):
    result, _ = quick
    assert set(FIGURE_KEYS) <= result.keys()
    assert set(ALWAYS_MEASURED) | set(NULLABLE) | set(NEEDS_WEIGHTS) | set(CURVES) | set(ONBOARD) == set(FIGURE_KEYS)
    for key in ALWAYS_MEASURED:
        assert positive(result[key]), (key, result[key])
    for key in ("basilisk_day_s", "full_vs_basilisk", "physics_vs_basilisk", "floor_vs_basilisk",
                "floor_per_tick_vs_basilisk"):
        assert result[key] is None or positive(result[key]), (key, result[key])
    energy = result["energy_vs_oracle"]
    assert energy is None or (set(energy) == set(ENERGY_PRESETS) and all(positive(v) for v in energy.values()))
    if default_weights_path().exists():
        for key in NEEDS_WEIGHTS:
            assert isinstance(result[key], float) and math.isfinite(result[key]), (key, result[key])
        assert 0.0 <= result["assistant_fact_accuracy"] <= result["assistant_fact_accuracy_after_fallback"] <= 1.0
        assert 0.0 < result["assistant_answer_p50_ms"] <= result["assistant_answer_p99_ms"]
        assert positive(result["assistant_onboard_tokens_per_s"])
        assert 0.0 <= result["assistant_onboard_fact_accuracy"] <= 1.0
        assert len(result["assistant_onboard_val_loss"]) == 2 and all(map(positive, result["assistant_onboard_val_loss"]))
    else:
        assert all(result[key] is None for key in NEEDS_WEIGHTS + ONBOARD)
        assert any("no such weights file" in note for note in result["notes"])
    curve = result["assistant_loss_curve"]  # [step, train loss, val loss] of a fine-tuning run
    assert curve and all(len(p) == 3 and all(math.isfinite(x) for x in p) for p in curve)
    assert [p[0] for p in curve] == sorted({p[0] for p in curve})
    assert result["quick"] is True and result["benchmarks"] == list(BENCHMARKS)
    assert result["sizes"]["sim_s"] == QUICK.sim_s


def test_ratios_are_the_quotients_of_their_figures(quick):
    r, _ = quick
    assert r["bus_ratio"] == pytest.approx(r["bus_sunlit_msgs_per_s"] / r["bus_raw_msgs_per_s"])
    assert r["train_overhead_ratio"] == pytest.approx(r["train_sil_steps_per_s"] / r["train_bare_steps_per_s"])
    assert r["cmd_rtt_p50_us"] <= r["cmd_rtt_p99_us"] and r["cmd_rtt_raw_p50_us"] <= r["cmd_rtt_raw_p99_us"]
    # The training bound by hand: a bare step, plus per step the job's evaluations and checkpoints
    # and its ticks at the floor's mean tick.
    train, floor = r["details"]["train"], r["details"]["floor"]["per_message"]
    bare_step_s = train["bare_wall_s"] / train["bare_steps"]
    extra_s = ((train["sil_evaluate_wall_s"] + train["sil_checkpoint_wall_s"]) / train["sil_steps"]
               + train["sil_ticks"] / train["sil_steps"] * floor["wall_s"] / floor["replay_ticks"])
    assert r["train_overhead_floor_ratio"] == pytest.approx(bare_step_s / (bare_step_s + extra_s))
    assert 0.0 < r["train_overhead_floor_ratio"] < 1.0
    pairs = {"full_vs_basilisk": "sil_day_full_s", "physics_vs_basilisk": "sil_day_physics_s",
             "floor_vs_basilisk": "sil_day_floor_s", "floor_per_tick_vs_basilisk": "sil_day_floor_per_tick_s"}
    if r["basilisk_day_s"] is None:
        assert all(r[ratio] is None for ratio in pairs)
        assert any(note.startswith("Basilisk not installed") for note in r["notes"])
    else:
        for ratio, figure in pairs.items():
            assert r[ratio] == pytest.approx(r[figure] / r["basilisk_day_s"])


def test_the_runs_behind_the_figures_did_what_they_claim(quick):
    d = quick[0]["details"]
    assert d["sil"]["sim_s"] == d["physics"]["sim_s"] == QUICK.sim_s
    assert d["sil"]["telemetry_messages"] > 0 and d["sil"]["bus_dropped"] == 0
    floor = d["floor"]
    assert floor["capture_ticks"] == QUICK.floor_capture_ticks and floor["messages_per_tick"] > 0
    for mode in ("per_message", "per_tick"):  # every replayed message reached the store, in both modes
        assert floor[mode]["replay_ticks"] == QUICK.floor_replay_ticks
        assert floor[mode]["rows_stored"] == round(floor["messages_per_tick"] * QUICK.floor_replay_ticks)
    assert floor["per_message"]["frames_sent"] == floor["per_message"]["rows_stored"]
    assert floor["per_message"]["frames_received"] == round(floor["deliveries_per_tick"] * QUICK.floor_replay_ticks)
    assert d["bus"]["sunlit_dropped"] == 0 and 150 <= d["bus"]["frame_bytes"] <= 250  # "~200 bytes"
    assert d["cmd"]["round_trips"] == QUICK.round_trips and d["cmd"]["stack"]["malformed"] == 0
    assert d["cmd"]["stack"]["rejected"] == 0
    assert d["train"]["sil_steps"] >= QUICK.train_steps and d["train"]["bare_steps"] >= QUICK.train_steps
    assert d["train"]["sil_ticks"] >= d["train"]["sil_steps"]  # a step is seconds of GPU work: one tick or more
    assert 0.0 <= d["train"]["sil_evaluate_wall_s"] + d["train"]["sil_checkpoint_wall_s"] < d["train"]["sil_wall_s"]
    assert d["assistant"]["train_measure"]["steps"] > 0 and d["assistant"]["train_measure"]["tokens"] > 0
    if default_weights_path().exists():
        from tools.bench_assistant import QUICK_TIMES_PER_PRESET

        assert d["assistant"]["eval_times"] == 2 * QUICK_TIMES_PER_PRESET  # both presets
        onboard = d["assistant"]["onboard_finetune"]
        assert onboard["steps"] > 0 and onboard["tokens"] > 0
        assert onboard["weights_sha256"] != onboard["base_weights_sha256"]  # it did train


def test_machine_facts_and_timestamp(quick):
    r, _ = quick
    machine = r["machine"]
    assert machine["cpu_count"] >= 1 and machine["torch_threads"] >= 1
    assert machine["python"].count(".") == 2
    assert datetime.fromisoformat(r["timestamp_utc"]).tzinfo is not None


def test_table_shows_each_figure_with_its_baseline_and_goal(quick):
    result, printed = quick
    assert format_table(result) in printed
    for label in ("whole flight stack", "world models alone", "messages alone, frame per message",
                  "messages alone, frame per tick", "bus throughput", "command RTT p50",
                  "training under the scheduler", *(f"energy vs oracle, {p}" for p in ENERGY_PRESETS)):
        assert label in printed
    assert ">= 0.8" in printed and ">= 0.97" in printed
    assert "assistant fact accuracy" in printed and ">= 0.99" in printed
    assert "assistant accuracy after fallback" in printed
    if result["basilisk_day_s"] is None:
        assert "Basilisk not installed" in printed


def test_goals_are_marked_met_or_not(quick):
    result = dict(quick[0])
    result.update(bus_ratio=0.81, train_overhead_ratio=0.5, assistant_fact_accuracy=0.995,
                  assistant_fact_accuracy_after_fallback=0.9996)
    lines = format_table(result).splitlines()
    assert next(line for line in lines if "bus throughput" in line).endswith("met")
    assert next(line for line in lines if "training under" in line).endswith("NOT MET")
    assert next(line for line in lines if "fact accuracy" in line).endswith("met")
    after = next(line for line in lines if "after fallback" in line)
    assert after.endswith("NOT MET") and "99.96 %" in after  # one answer in 2500 wrong is not 1.0


def test_goals_past_the_floor_are_named():
    from tools.bench import _floor_notes

    base = {"floor_vs_basilisk": None, "floor_per_tick_vs_basilisk": None, "train_overhead_floor_ratio": None}
    assert _floor_notes(base) == []
    assert _floor_notes({**base, "floor_vs_basilisk": 2.5, "floor_per_tick_vs_basilisk": 2.0,
                         "train_overhead_floor_ratio": 0.99}) == []
    notes = _floor_notes({**base, "floor_vs_basilisk": 11.1, "floor_per_tick_vs_basilisk": 9.7,
                          "train_overhead_floor_ratio": 0.969})
    assert len(notes) == 2
    assert "11.1x Basilisk" in notes[0] and "9.7x with one frame per tick" in notes[0]
    assert "0.969" in notes[1]


def test_only_runs_the_named_benchmarks():
    result = run_benchmarks(quick=True, only=["physics"])
    assert result["benchmarks"] == ["physics"] and positive(result["sil_day_physics_s"])
    assert all(result[key] is None for key in FIGURE_KEYS if key != "sil_day_physics_s")
    with pytest.raises(ValueError, match="unknown benchmark"):
        run_benchmarks(quick=True, only=["warp-drive"])


def test_cli_rejects_an_unknown_benchmark(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--only", "warp-drive"])
    assert "invalid choice" in capsys.readouterr().err
