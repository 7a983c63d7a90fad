"""The run report: state of charge, solar input, GPU power and cap, temperatures, with eclipses
shaded, against time — drawn from the run's telemetry database, as a ground analyst would."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display on the machines this runs on
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from flight.clock import parse_iso_utc  # noqa: E402


def _series(db: sqlite3.Connection, table: str, columns: list[str]) -> dict[str, np.ndarray]:
    rows = db.execute(f'SELECT t_ns, {", ".join(columns)} FROM "{table}" ORDER BY t_ns').fetchall()
    data = np.array([[np.nan if v is None else float(v) for v in row] for row in rows], dtype=float)
    if data.size == 0:
        data = np.empty((0, len(columns) + 1))
    return {"t_ns": data[:, 0], **{c: data[:, i + 1] for i, c in enumerate(columns)}}


def write_report(db_path: Path, summary: dict[str, Any], png_path: Path) -> Path:
    epoch = parse_iso_utc(summary["epoch_utc"])
    with sqlite3.connect(db_path) as db:
        eps = _series(db, "tlm_eps", ["battery_soc", "solar_power_w", "bus_load_w"])
        gpu = _series(db, "tlm_gpu", ["power_w", "power_cap_w"])
        power = _series(db, "tlm_power", ["cap_w", "gpu_on"])
        thermal = _series(db, "tlm_thermal", ["gpu_die_temp_c", "cold_plate_temp_c", "radiator_temp_c"])

    def times(series: dict[str, np.ndarray]) -> list[datetime]:
        return [epoch + timedelta(seconds=t / 1e9) for t in series["t_ns"]]

    fig, axes = plt.subplots(4, 1, figsize=(12, 11), sharex=True)
    ax_soc, ax_solar, ax_gpu, ax_temp = axes
    ax_soc.plot(times(eps), 100 * eps["battery_soc"], color="tab:green", lw=1.2, label="state of charge")
    floor = 100 * (1 - summary["dod_limit"])
    ax_soc.axhline(floor, color="tab:red", ls="--", lw=1, label=f"DoD floor ({floor:.0f} %)")
    ax_soc.set_ylabel("battery SoC [%]")
    ax_soc.legend(loc="lower left", fontsize=8)

    ax_solar.plot(times(eps), eps["solar_power_w"], color="tab:orange", lw=1.2, label="solar array")
    ax_solar.plot(times(eps), eps["bus_load_w"], color="tab:gray", lw=1, label="bus load")
    ax_solar.set_ylabel("power [W]")
    ax_solar.legend(loc="lower left", fontsize=8)

    gpu_power = np.where(np.isnan(gpu["power_w"]), 0.0, gpu["power_w"])
    ax_gpu.plot(times(gpu), gpu_power, color="tab:purple", lw=1, label="GPU power")
    cap = np.where(power["gpu_on"] > 0, power["cap_w"], np.nan)
    ax_gpu.plot(times(power), cap, color="black", lw=1, ls="--", label="power cap (GPU on)")
    ax_gpu.set_ylabel("GPU [W]")
    ax_gpu.legend(loc="lower left", fontsize=8)

    for column, color, label in (("gpu_die_temp_c", "tab:red", "GPU die"),
                                 ("cold_plate_temp_c", "tab:blue", "cold plate"),
                                 ("radiator_temp_c", "tab:cyan", "radiator")):
        ax_temp.plot(times(thermal), thermal[column], color=color, lw=1, label=label)
    ax_temp.set_ylabel("temperature [°C]")
    ax_temp.legend(loc="lower left", fontsize=8)

    end = epoch + timedelta(seconds=summary["sim_seconds"])
    for eclipse in summary["eclipses"]:
        start, stop = parse_iso_utc(eclipse["start"]), min(parse_iso_utc(eclipse["end"]), end)
        for ax in axes:
            ax.axvspan(start, stop, color="0.85", zorder=0)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_xlim(epoch, end)
    ax_temp.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    ax_temp.set_xlabel(f"UTC from {summary['epoch_utc']} (grey: umbra)")
    fig.suptitle(f"Sunlit SIL run — {summary['scenario']}, seed {summary['seed']}, "
                 f"{summary['compute']} compute, {summary['sim_seconds'] / 60:.0f} min simulated")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return Path(png_path)
