"""`sunlit sim`: run a scenario with the whole flight stack in the loop and write its outputs.

Outputs, in the run folder: ``summary.json``, ``telemetry.db`` (SQLite), ``report.png`` and the
training ``checkpoints/``. This is wiring, so it may read the wall clock (to report wall time).
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from sim.scenario import Scenario, load_scenario
from sim.sil import SilRun
from tools.report import write_report


def default_out_dir(scenario: Scenario, seed: int) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path("runs") / f"{scenario.name}-{stamp}-seed{seed}"


def run_simulation(scenario: str | Path | Scenario = "starcloud1", *, orbits: float | None = None,
                   duration_s: float | None = None, seed: int = 0, compute: str = "real",
                   out_dir: Path | None = None, report: bool = True,
                   progress_factory: Callable[[int], Callable[[int], None]] | None = None,
                   sequences: list[Path] = ()) -> dict[str, Any]:
    """Run and write outputs; returns the summary. Default: one orbit.

    Each sequence file is checked (SequenceError lists every problem), then loaded and started
    through the dispatcher at the epoch, as a ground uplink would.
    """
    from tools.sequence_tool import uplink_commands

    uplink = [command for path in sequences for command in uplink_commands(path)]
    if orbits is not None and duration_s is not None:
        raise ValueError("give orbits or duration_s, not both")
    scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    out = Path(out_dir) if out_dir is not None else default_out_dir(scenario, seed)
    wall_start = time.perf_counter()
    from flight.downlink import LoopbackTransport
    from tools.ground_archive import GroundArchive

    # The ground side of store-and-forward: what the passes brought down, archived in ground.db.
    out.mkdir(parents=True, exist_ok=True)
    ground = GroundArchive(out / "ground.db", durable=False)
    run = SilRun(scenario, out, seed=seed, compute=compute, uplink=uplink,
                 downlink_transport=LoopbackTransport(ground.receive_batch, history=0))
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
        f"  training    {summary['train_steps']} steps"
        + (f", loss {summary['train_loss_final']:.3f}" if summary["train_loss_final"] is not None else "")
        + f", {summary['checkpoints']} checkpoints, {summary['resumes']} resumes, "
        f"{summary['gpu_on_cycles']} GPU on-cycles",
        f"  downlink    {summary['downlink']['passes']} ground passes, "
        f"{summary['downlink']['ground_archived_frames']} frames archived on the ground (ground.db), "
        f"{summary['downlink']['queued_frames']} still queued on board",
        f"  flight sw   {summary['telemetry_messages']} messages stored, {summary['bus_dropped']} dropped, "
        f"{summary['frame_slips']} frame slips, {summary['member_errors']} member errors",
        *(f"  sequence    {name}: {seq['state']} ({seq['commands_ok']}/{seq['commands']} commands OK)"
          + (f"; {seq['failure']}" if seq.get("failure") else "")
          for name, seq in summary.get("sequences", {}).items()),
        f"  hashes      telemetry {summary['telemetry_sha256'][:16]}…"
        + (f"  weights {summary['weights_sha256'][:16]}…" if summary["weights_sha256"] else ""),
        f"  wrote       {summary['out_dir']}/summary.json, telemetry.db, report.png",
    ]
    return "\n".join(lines)
