"""`sunlit sim`: run a scenario with the whole flight stack in the loop and write its outputs.

Outputs, in the run folder: ``summary.json``, ``telemetry.db`` (SQLite), ``report.png`` and the
training ``checkpoints/`` (and ``dialogues.txt``, the corpus written for ``--train assistant``). This is wiring, so it may read the wall clock (to report wall time) and
the environment ($SUNLIT_HF_MODEL, for the assistant's model: ``resolve_assistant_model``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from sim.scenario import TRAINING_TASKS, Scenario, ScenarioError, load_scenario
from sim.sil import AssistantModelChoiceError, SilRun, assistant_model_source
from tools.report import write_report


def resolve_assistant_model(choice: str | Path = "auto", compute: str = "real", *, prefer_model: bool = False,
                            environ: Mapping[str, str] | None = None) -> str:
    """What SilRun gets for a user's ``--assistant-model``: "auto", where a model is wanted (real
    compute, or ``prefer_model``), becomes the Hugging Face directory in $SUNLIT_HF_MODEL when that
    is set, else the onboard model; every other choice passes through (SilRun checks it)."""
    choice = str(choice)
    if choice != "auto" or not (compute == "real" or prefer_model):
        return choice
    from flight.assistant.backends import BackendUnavailable, find_local_model

    try:
        directory = find_local_model(environ=environ)
    except BackendUnavailable as exc:
        raise AssistantModelChoiceError(str(exc)) from exc
    return str(directory) if directory is not None else "onboard"


def default_out_dir(scenario: Scenario, seed: int) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path("runs") / f"{scenario.name}-{stamp}-seed{seed}"


def run_simulation(scenario: str | Path | Scenario = "starcloud1", *, orbits: float | None = None,
                   duration_s: float | None = None, seed: int = 0, compute: str = "real",
                   out_dir: Path | None = None, report: bool = True,
                   progress_factory: Callable[[int], Callable[[int], None]] | None = None,
                   sequences: list[Path] = (), assistant_model: str | Path = "auto",
                   train: str | None = None, dialogues: Path | None = None) -> dict[str, Any]:
    """Run and write outputs; returns the summary. Default: one orbit.

    ``train``: the training task ("text" or "assistant"; None: the scenario's). ``dialogues``: the
    assistant task's dialogue corpus (None: the scenario's, else one written from the simulator
    into the run folder, ``dialogues.txt``).

    ``assistant_model``: auto, none, onboard or a path (``sunlit sim --help``; sim/sil.py);
    AssistantModelChoiceError for a bad one.

    Each sequence file is checked (SequenceError lists every problem), then loaded and started
    through the dispatcher at the epoch, as a ground uplink would.
    """
    from tools.sequence_tool import uplink_commands

    uplink = [command for path in sequences for command in uplink_commands(path)]
    if orbits is not None and duration_s is not None:
        raise ValueError("give orbits or duration_s, not both")
    scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    scenario = with_training_task(scenario, train, dialogues)
    assistant_model = resolve_assistant_model(assistant_model, compute)
    assistant_model_source(assistant_model, compute)  # a bad choice fails before anything is written
    out = Path(out_dir) if out_dir is not None else default_out_dir(scenario, seed)
    scenario = with_dialogue_corpus(scenario, out, seed)
    wall_start = time.perf_counter()
    from flight.downlink import LoopbackTransport
    from tools.ground_archive import GroundArchive

    # The ground side of store-and-forward: what the passes brought down, archived in ground.db.
    out.mkdir(parents=True, exist_ok=True)
    ground = GroundArchive(out / "ground.db", durable=False)
    try:
        run = SilRun(scenario, out, seed=seed, compute=compute, uplink=uplink,
                     downlink_transport=LoopbackTransport(ground.receive_batch, history=0),
                     assistant_model=assistant_model)
    except BaseException:
        ground.close()
        raise
    try:
        if duration_s is None:
            duration_s = (1.0 if orbits is None else orbits) * run.world.orbit.propagator.mean_motion_period_s
        n_steps = math.ceil(duration_s / run.step_s)
        progress = progress_factory(n_steps * run.step_s) if progress_factory is not None else None
        run.run(duration_s, progress=progress)
        summary = run.finish()
    finally:
        run.close()
        summary_ground = ground.stats()
        ground.close()
    summary["downlink"]["ground_archived_frames"] = summary_ground["frames_archived"]
    summary["wall_seconds"] = round(time.perf_counter() - wall_start, 3)
    summary["speedup"] = round(summary["sim_seconds"] / max(summary["wall_seconds"], 1e-9), 1)
    summary["out_dir"] = str(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if report:
        write_report(out / "telemetry.db", summary, out / "report.png")
    return summary


# The corpus `sunlit sim --train assistant` writes when none is given: 50 random times of each preset,
# 4 questions each (400 dialogues, about 6 s to generate); `python -m tools.dialogues corpus` makes more.
SIM_DIALOGUE_TIMES_PER_PRESET = 50
SIM_DIALOGUE_QUESTIONS = 4


def with_training_task(scenario: Scenario, task: str | None, dialogues: Path | None = None) -> Scenario:
    """The scenario with its [training] task (and dialogue corpus) replaced; checked like a file's."""
    if task is None and dialogues is None:
        return scenario
    training = dict(scenario.training)
    if task is not None:
        if task not in TRAINING_TASKS:
            raise ScenarioError(f"training task must be one of {', '.join(TRAINING_TASKS)}, got {task!r}")
        training["task"] = task
    if dialogues is not None:
        if training["task"] != "assistant":
            raise ScenarioError("a dialogue corpus applies only to the assistant training task (--train assistant)")
        if not Path(dialogues).is_file():
            raise ScenarioError(f"dialogue corpus {dialogues}: no such file; write one with "
                                f"'python -m tools.dialogues corpus --out FILE'")
        training["dialogues"] = str(Path(dialogues).resolve())
    if training["task"] == "assistant" and training["dataset"] is not None:
        raise ScenarioError("the assistant training task trains on dialogues, not on the scenario's dataset")
    return dataclasses.replace(scenario, training=training)


def with_dialogue_corpus(scenario: Scenario, out_dir: Path, seed: int) -> Scenario:
    """An assistant-task scenario without a corpus gets one from the simulator, in ``out_dir``."""
    if scenario.training["task"] != "assistant" or scenario.training["dialogues"] is not None:
        return scenario
    return with_training_task(scenario, "assistant", write_dialogue_corpus(out_dir / "dialogues.txt", seed))


def write_dialogue_corpus(path: Path, seed: int) -> Path:
    """A dialogue corpus from the simulator (tools/dialogues.py), days 0-6 of both presets."""
    from tools.dialogues import corpus_text, dialogues

    items = dialogues("train", SIM_DIALOGUE_TIMES_PER_PRESET, SIM_DIALOGUE_QUESTIONS, seed=1000 + seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(corpus_text(items), encoding="utf-8")
    return path


def human_summary(summary: dict[str, Any]) -> str:
    e = summary["energy_wh"]
    lines = [
        f"Sunlit SIL run: {summary['scenario']} (seed {summary['seed']}, {summary['compute']} compute)",
        f"  simulated   {summary['sim_seconds'] / 60:.1f} min from {summary['epoch_utc']} "
        f"in {summary['wall_seconds']:.1f} s wall ({summary['speedup']:.0f}x real time)",
        f"  eclipses    {len(summary['eclipses'])}"
        + "".join(f"\n              {x['start']} -> {x['end']} ({x['duration_s'] / 60:.1f} min)"
                  for x in summary["eclipses"]),
        f"  battery     min SoC {100 * summary['battery_soc_min']:.1f} %, final "
        f"{100 * summary['battery_soc_final']:.1f} %, floor {100 * (1 - summary['dod_limit']):.0f} %, "
        f"DoD violations {summary['dod_violations']}",
        f"  energy      solar {e['solar']:.0f} Wh, GPU {e['gpu']:.0f} Wh, bus {e['bus']:.0f} Wh, "
        f"shunted {e['shunted']:.0f} Wh",
        f"  training    {'assistant fine-tuning, ' if summary.get('training_task') == 'assistant' else ''}"
        f"{summary['train_steps']} steps"
        + (f", loss {_loss_text(summary['train_loss_final'])}" if summary["train_loss_final"] is not None else "")
        + f", {summary['checkpoints']} checkpoints, {summary['resumes']} resumes, "
        f"{summary['gpu_on_cycles']} GPU on-cycles",
        f"  downlink    {summary['downlink']['passes']} ground passes, "
        f"{summary['downlink']['ground_archived_frames']} frames archived on the ground (ground.db), "
        f"{summary['downlink']['queued_frames']} still queued on board",
        f"  flight sw   {summary['telemetry_messages']} messages stored, {summary['bus_dropped']} dropped, "
        f"{summary['frame_slips']} frame slips, {summary['member_errors']} member errors",
        *([_assistant_line(summary["assistant"])] if summary.get("assistant", {}).get("asked") else []),
        *(f"  sequence    {name}: {seq['state']} ({seq['commands_ok']}/{seq['commands']} commands OK)"
          + (f"; {seq['failure']}" if seq.get("failure") else "")
          for name, seq in summary.get("sequences", {}).items()),
        f"  hashes      telemetry {summary['telemetry_sha256'][:16]}…"
        + (f"  weights {summary['weights_sha256'][:16]}…" if summary["weights_sha256"] else ""),
        f"  wrote       {summary['out_dir']}/summary.json, telemetry.db, report.png",
    ]
    return "\n".join(lines)


def _loss_text(loss: float) -> str:
    return f"{loss:.3f}" if loss >= 0.01 else f"{loss:.1e}"  # fine-tuning losses are tiny


def _assistant_line(a: dict[str, Any]) -> str:
    model = a["model"] or (f"none ({a['model_error']})" if a["model_error"] else "none")
    return (f"  assistant   {a['asked']} questions: {a['model_answers']} answered by the model, "
            f"{a['fallbacks']} corrected by the checker, {a['no_allowance']} without GPU allowance, "
            f"{a['template_answers']} from templates; {a['model_energy_wh']:.3f} Wh of GPU; model {model}")
