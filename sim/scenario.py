"""Scenario files: TOML, validated on load with errors that name the key.

A scenario is everything the world needs to know about one satellite: its orbit (elements or a
TLE), solar arrays, battery, bus loads, GPU, thermal network, the payload's training workload (and,
optionally, a prepared dataset folder or, for the assistant fine-tuning task, a dialogue corpus,
relative to the scenario file), its ground stations and
downlink rate, and the simulation step. Presets ship inside the package
(``sim/scenarios/*.toml``) and are selected by name; any other TOML file can be given by path.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any


class ScenarioError(ValueError):
    """A scenario file is missing, malformed, or has a key with a bad value."""


@dataclass(frozen=True)
class Key:
    """One accepted key of a section: its type, bounds and default (None: required)."""

    kind: type
    default: Any = None
    min_value: float | None = None
    max_value: float | None = None
    min_exclusive: bool = False
    required: bool = False


def _num(default=None, lo=None, hi=None, lo_exclusive=False, required=False) -> Key:
    return Key(float, default, lo, hi, lo_exclusive, required)


def _int(default=None, lo=None, hi=None, required=False) -> Key:
    return Key(int, default, lo, hi, False, required)


# Section schemas. Every accepted key is listed: an unknown key is an error (it is usually a typo
# that would otherwise silently fall back to a default).
SCHEMA: dict[str, dict[str, Key]] = {
    "orbit": {
        "altitude_km": _num(None, 100.0, 40000.0),
        "inclination_deg": _num(None, 0.0, 180.0),
        "raan_deg": _num(0.0, 0.0, 360.0),
        "epoch_utc": Key(str),
        "eccentricity": _num(0.0, 0.0, 0.2),
        "arg_perigee_deg": _num(0.0, 0.0, 360.0),
        "mean_anomaly_deg": _num(0.0, 0.0, 360.0),
        "bstar_per_earth_radius": _num(0.0, 0.0, 0.01),
        "tle": Key(list),
    },
    "solar_array": {
        "area_m2": _num(None, 0.0, 1000.0, lo_exclusive=True, required=True),
        "cell_efficiency": _num(None, 0.0, 0.5, lo_exclusive=True, required=True),
        "packing_factor": _num(0.85, 0.0, 1.0, lo_exclusive=True),
        "pointing_cos": _num(1.0, 0.0, 1.0),
    },
    "battery": {
        "capacity_wh": _num(None, 0.0, 1e6, lo_exclusive=True, required=True),
        "initial_soc": _num(0.95, 0.0, 1.0),
        "charge_efficiency": _num(0.95, 0.0, 1.0, lo_exclusive=True),
        "discharge_efficiency": _num(0.95, 0.0, 1.0, lo_exclusive=True),
        "max_charge_w": _num(None, 0.0, 1e6, lo_exclusive=True, required=True),
        "max_discharge_w": _num(None, 0.0, 1e6, lo_exclusive=True, required=True),
        "dod_limit": _num(0.30, 0.0, 1.0, lo_exclusive=True),
    },
    "bus_load": {
        # Avionics, ADCS, radios and the payload host computer: always on.
        "power_w": _num(None, 0.0, 1e5, required=True),
        # Share of the bus load that heats the payload cold plate (the host computer next to the GPU).
        "plate_heat_fraction": _num(0.5, 0.0, 1.0),
    },
    "gpu": {
        "idle_power_w": _num(80.0, 0.0, 2000.0, lo_exclusive=True),
        "tdp_w": _num(700.0, 0.0, 2000.0, lo_exclusive=True),
        "min_cap_w": _num(200.0, 0.0, 2000.0, lo_exclusive=True),
        "max_cap_w": _num(700.0, 0.0, 2000.0, lo_exclusive=True),
        "throughput_exponent": _num(None, 0.0, 1.0, lo_exclusive=True),
        "boot_time_s": _num(30.0, 0.0, 3600.0),
        "slowdown_temp_c": _num(87.0, -50.0, 150.0),
        "shutdown_temp_c": _num(92.0, -50.0, 150.0),
    },
    "thermal": {
        "die_heat_capacity_j_k": _num(600.0, 0.0, 1e7, lo_exclusive=True),
        "plate_heat_capacity_j_k": _num(8000.0, 0.0, 1e8, lo_exclusive=True),
        "radiator_heat_capacity_j_k": _num(20000.0, 0.0, 1e8, lo_exclusive=True),
        "die_to_plate_w_k": _num(30.0, 0.0, 1e5, lo_exclusive=True),
        "plate_to_radiator_w_k": _num(60.0, 0.0, 1e5, lo_exclusive=True),
        "radiator_area_m2": _num(2.5, 0.0, 1000.0, lo_exclusive=True),
        "radiator_emissivity": _num(0.88, 0.0, 1.0, lo_exclusive=True),
        "radiator_absorptivity": _num(0.2, 0.0, 1.0),
        "radiator_earth_view_factor": _num(0.3, 0.0, 1.0),
        "initial_temp_c": _num(20.0, -150.0, 150.0),
    },
    "training": {
        # Modelled cost of one training step of the target workload on the target GPU at full TDP.
        "step_time_s_at_tdp": _num(4.0, 0.0, 86400.0, lo_exclusive=True),
        "batch_size": _int(16, 1, 4096),
        "block_size": _int(64, 8, 4096),
        "n_layer": _int(4, 1, 64),
        "n_head": _int(4, 1, 64),
        "n_embd": _int(128, 8, 8192),
        "learning_rate": _num(3e-3, 0.0, 1.0, lo_exclusive=True),
        # "young_daly": Daly's optimum from checkpoint_cost_s and the interruption rate; "fixed":
        # every checkpoint_interval_steps (giving only checkpoint_interval_steps means "fixed").
        "checkpoint_interval": Key(str, "young_daly"),
        "checkpoint_interval_steps": _int(200, 1, 10**9),
        # Mission seconds of training one checkpoint of the target workload costs (modelled).
        "checkpoint_cost_s": _num(10.0, 0.0, 86400.0, lo_exclusive=True),
        # Unpredictable interruptions (GPU resets from upsets) per day outside the SAA: the Llama 3
        # ground H100 rate, 4.7e-4 per GPU-day (domain-facts, "Ground-rate baseline"), as a floor.
        "interruptions_per_day": _num(4.7e-4, 0.0, 1e6, lo_exclusive=True),
        # Rate multiplier inside the South Atlantic Anomaly (domain-facts: 10-50x, default 20x).
        "saa_interruption_factor": _num(20.0, 1.0, 1e6),
        "checkpoint_lead_s": _num(60.0, 0.0, 86400.0),
        "eval_interval_steps": _int(100, 1, 10**9),
        "num_threads": _int(2, 1, 256),
        # A folder made by `sunlit prepare` (relative to the scenario file); absent: the packaged corpus.
        "dataset": Key(str),
        # "text": the character-level GPT from its seed (on dataset or the packaged corpus);
        # "assistant": the assistant's GPT fine-tuned from its weights on telemetry dialogues, whose
        # newest verified checkpoint the assistant speaks with. The model's shape is then the
        # weights' own (block_size, n_layer, n_head, n_embd and learning_rate above do not apply).
        "task": Key(str, "text"),
        # Task "assistant": a dialogue corpus (`python -m tools.dialogues corpus`), relative to the
        # scenario file; absent: `sunlit sim` writes one from the simulator into the run folder.
        "dialogues": Key(str),
        "finetune_learning_rate": _num(5e-5, 0.0, 1.0, lo_exclusive=True),  # see flight/training/finetune.py
    },
    "power_manager": {
        # Energy kept above the DoD floor as a margin for sensor error and model mismatch.
        "reserve_margin_fraction": _num(0.03, 0.0, 0.5),
        # The GPU is only switched on when it can run at least this long (avoids flapping).
        "min_on_time_s": _num(300.0, 0.0, 86400.0),
    },
    "simulation": {
        "step_s": _int(1, 1, 3600),
        "telemetry_noise": Key(bool, True),
    },
    "ground": {
        # Downlink bit rate while a station is in view. 1 Mbit/s is a mid-range S-band smallsat
        # link (S-band tops out near 4.3 Mbit/s; X-band is 50-220 Mbit/s): about 3x what the SIL's
        # ~14 kbit/s of telemetry needs with 4-5 % of the day in contact, so the queue drains.
        "downlink_rate_bps": _num(1_000_000.0, 0.0, 1e11, lo_exclusive=True),
        # [[ground.stations]] tables, each checked against STATION_SCHEMA.
        "stations": Key(list, ()),
    },
}

# One [[ground.stations]] table.
STATION_SCHEMA: dict[str, Key] = {
    "name": Key(str, required=True),
    "lat_deg": _num(None, -90.0, 90.0, required=True),  # WGS84 geodetic
    "lon_deg": _num(None, -180.0, 180.0, required=True),  # east positive
    "alt_m": _num(0.0, -500.0, 9000.0),  # above the WGS84 ellipsoid
    # Elevation mask: below it the link does not close (terrain, multipath, link margin).
    "min_elevation_deg": _num(10.0, 0.0, 89.0),
}

REQUIRED_SECTIONS = ("orbit", "solar_array", "battery", "bus_load")


@dataclass(frozen=True)
class Scenario:
    """A validated scenario. Sections are plain dicts with every default filled in."""

    name: str
    description: str
    source: str
    orbit: dict[str, Any]
    solar_array: dict[str, Any]
    battery: dict[str, Any]
    bus_load: dict[str, Any]
    gpu: dict[str, Any]
    thermal: dict[str, Any]
    training: dict[str, Any]
    power_manager: dict[str, Any]
    simulation: dict[str, Any]
    # Optional in files: no stations and the default rate when absent.
    ground: dict[str, Any] = field(default_factory=lambda: {
        "downlink_rate_bps": SCHEMA["ground"]["downlink_rate_bps"].default, "stations": []})
    epoch_utc: datetime = field(default=None)  # type: ignore[assignment]

    @property
    def soc_floor(self) -> float:
        """Lowest state of charge the payload may take the battery to."""
        return 1.0 - self.battery["dod_limit"]

    @property
    def ground_stations(self) -> list[dict[str, Any]]:
        """[[ground.stations]] with defaults filled in: name, lat_deg, lon_deg, alt_m, min_elevation_deg."""
        return [dict(station) for station in self.ground["stations"]]

    @property
    def downlink_rate_bps(self) -> float:
        return self.ground["downlink_rate_bps"]


def preset_names() -> list[str]:
    folder = resources.files("sim") / "scenarios"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a preset by name (``starcloud1``) or a TOML file by path."""
    text, source = _read_source(name_or_path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"scenario {source}: not valid TOML: {exc}") from exc
    return parse_scenario(data, source=source)


def _read_source(name_or_path: str | Path) -> tuple[str, str]:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ScenarioError(f"scenario file not found: {path}")
        return path.read_text(encoding="utf-8"), str(path)
    name = str(name_or_path)
    preset = resources.files("sim") / "scenarios" / f"{name}.toml"
    if not preset.is_file():
        raise ScenarioError(
            f"unknown scenario {name!r}: not a file and not a preset "
            f"(presets: {', '.join(preset_names())})"
        )
    return preset.read_text(encoding="utf-8"), name


def parse_scenario(data: dict[str, Any], source: str = "<dict>") -> Scenario:
    where = f"scenario {source}"
    known = set(SCHEMA) | {"name", "description"}
    for key in data:
        if key not in known:
            raise ScenarioError(f"{where}: unknown section or key {key!r} (known: {', '.join(sorted(known))})")
    for section in REQUIRED_SECTIONS:
        if section not in data:
            raise ScenarioError(f"{where}: missing section [{section}]")
    sections = {name: _validate_section(where, name, data.get(name, {})) for name in SCHEMA}
    orbit = sections["orbit"]
    epoch = _validate_orbit(where, orbit, data.get("orbit", {}))
    sections["ground"]["stations"] = _validate_stations(where, sections["ground"]["stations"])
    _validate_training(where, sections["training"], data.get("training", {}), source)
    _validate_cross_section(where, sections)
    name = data.get("name", Path(source).stem if source.endswith(".toml") else source)
    if not isinstance(name, str):
        raise ScenarioError(f"{where}: name must be a string")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError(f"{where}: description must be a string")
    return Scenario(name=name, description=description, source=source, epoch_utc=epoch, **sections)


def _validate_section(where: str, section: str, values: Any) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ScenarioError(f"{where}: [{section}] must be a table")
    schema = SCHEMA[section]
    for key in values:
        if key not in schema:
            raise ScenarioError(
                f"{where}: [{section}] unknown key {key!r} (accepted: {', '.join(schema)})"
            )
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        full = f"[{section}] {key}"
        if key not in values:
            if spec.required:
                raise ScenarioError(f"{where}: {full} is required")
            out[key] = spec.default
            continue
        out[key] = _check_value(where, full, spec, values[key])
    return out


def _check_value(where: str, full: str, spec: Key, value: Any) -> Any:
    if spec.kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ScenarioError(f"{where}: {full} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ScenarioError(f"{where}: {full} must be finite, got {value!r}")
    elif spec.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScenarioError(f"{where}: {full} must be an integer, got {value!r}")
    elif not isinstance(value, spec.kind):
        raise ScenarioError(f"{where}: {full} must be a {spec.kind.__name__}, got {value!r}")
    if spec.min_value is not None:
        too_low = value <= spec.min_value if spec.min_exclusive else value < spec.min_value
        if too_low:
            op = ">" if spec.min_exclusive else ">="
            raise ScenarioError(f"{where}: {full} must be {op} {spec.min_value:g}, got {value!r}")
    if spec.max_value is not None and value > spec.max_value:
        raise ScenarioError(f"{where}: {full} must be <= {spec.max_value:g}, got {value!r}")
    return value


def parse_epoch_utc(text: str, full: str = "epoch_utc") -> datetime:
    """Parse an ISO 8601 UTC time ('2025-11-02T06:30:00Z'); naive times are taken as UTC."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ScenarioError(f"{full} must be an ISO 8601 UTC time like 2025-11-02T06:30:00Z, got {text!r}") from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _validate_orbit(where: str, orbit: dict[str, Any], given: dict[str, Any]) -> datetime:
    tle = orbit["tle"]
    element_keys = [k for k in ("altitude_km", "inclination_deg", "raan_deg", "eccentricity",
                                "arg_perigee_deg", "mean_anomaly_deg") if k in given]
    if tle is not None:
        if element_keys:
            raise ScenarioError(
                f"{where}: [orbit] give either tle or elements, not both (found tle and {', '.join(element_keys)})"
            )
        if len(tle) != 2 or not all(isinstance(line, str) for line in tle):
            raise ScenarioError(f"{where}: [orbit] tle must be a list of two strings (line 1, line 2)")
        from sim.orbit import satrec_from_tle  # local: the TLE check needs sgp4

        try:
            satrec = satrec_from_tle(tle[0], tle[1])
        except ValueError as exc:
            raise ScenarioError(f"{where}: [orbit] tle: {exc}") from exc
        if orbit["epoch_utc"] is None:
            # A TLE carries its own epoch; the run starts there unless epoch_utc says otherwise.
            from sgp4.conveniences import sat_epoch_datetime

            return sat_epoch_datetime(satrec).astimezone(timezone.utc)
    else:
        for key in ("altitude_km", "inclination_deg", "epoch_utc"):
            if orbit[key] is None:
                raise ScenarioError(f"{where}: [orbit] {key} is required (or give tle = [line1, line2])")
    if orbit["epoch_utc"] is None:
        raise ScenarioError(f"{where}: [orbit] epoch_utc is required")
    return parse_epoch_utc(orbit["epoch_utc"], f"{where}: [orbit] epoch_utc")


def _validate_stations(where: str, stations: Any) -> list[dict[str, Any]]:
    """Each [[ground.stations]] table: known keys, types and ranges, names unique."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, entry in enumerate(stations, start=1):
        label = f"[[ground.stations]] #{index}"
        if not isinstance(entry, dict):
            raise ScenarioError(f"{where}: {label} must be a table, got {entry!r}")
        if isinstance(entry.get("name"), str) and entry["name"]:
            label = f"{label} ({entry['name']!r})"
        for key in entry:
            if key not in STATION_SCHEMA:
                raise ScenarioError(f"{where}: {label} unknown key {key!r} (accepted: {', '.join(STATION_SCHEMA)})")
        station: dict[str, Any] = {}
        for key, spec in STATION_SCHEMA.items():
            if key not in entry:
                if spec.required:
                    raise ScenarioError(f"{where}: {label} {key} is required")
                station[key] = spec.default
                continue
            station[key] = _check_value(where, f"{label} {key}", spec, entry[key])
        if not station["name"]:
            raise ScenarioError(f"{where}: {label} name must not be empty")
        if station["name"] in seen:
            raise ScenarioError(f"{where}: {label} name {station['name']!r} is used by an earlier station")
        seen.add(station["name"])
        out.append(station)
    return out


CHECKPOINT_INTERVALS = ("young_daly", "fixed")
TRAINING_TASKS = ("text", "assistant")


def _validate_training(where: str, training: dict[str, Any], given: dict[str, Any], source: str) -> None:
    """The checkpoint policy's keys agree; the dataset path is resolved and exists."""
    if "checkpoint_interval" not in given and "checkpoint_interval_steps" in given:
        training["checkpoint_interval"] = "fixed"  # a step count alone asks for a fixed interval
    policy = training["checkpoint_interval"]
    if policy not in CHECKPOINT_INTERVALS:
        raise ScenarioError(f"{where}: [training] checkpoint_interval must be one of "
                            f"{', '.join(CHECKPOINT_INTERVALS)}, got {policy!r}")
    if policy == "young_daly" and "checkpoint_interval_steps" in given:
        raise ScenarioError(f"{where}: [training] checkpoint_interval_steps applies only with "
                            f"checkpoint_interval = \"fixed\" (young_daly computes the interval)")
    if training["task"] not in TRAINING_TASKS:
        raise ScenarioError(f"{where}: [training] task must be one of {', '.join(TRAINING_TASKS)}, "
                            f"got {training['task']!r}")
    if training["task"] == "assistant" and training["dataset"] is not None:
        raise ScenarioError(f"{where}: [training] dataset applies to task \"text\"; the assistant task "
                            f"trains on dialogues")
    if training["dialogues"] is not None:
        if training["task"] != "assistant":
            raise ScenarioError(f"{where}: [training] dialogues applies only with task = \"assistant\"")
        path = Path(training["dialogues"])
        if not path.is_absolute() and Path(source).is_file():
            path = Path(source).resolve().parent / path
        if not path.is_file():
            raise ScenarioError(f"{where}: [training] dialogues {training['dialogues']!r}: no such file ({path}); "
                                f"write one with 'python -m tools.dialogues corpus --out FILE'")
        training["dialogues"] = str(path.resolve())
    dataset = training["dataset"]
    if dataset is not None:
        path = Path(dataset)
        if not path.is_absolute() and Path(source).is_file():
            path = Path(source).resolve().parent / path  # relative to the scenario file
        if not path.is_dir():
            raise ScenarioError(f"{where}: [training] dataset {dataset!r}: no such folder ({path}); "
                                f"make one with 'sunlit prepare TEXT_FILE --out DIR'")
        training["dataset"] = str(path.resolve())


def _validate_cross_section(where: str, sections: dict[str, dict[str, Any]]) -> None:
    gpu = sections["gpu"]
    if not gpu["idle_power_w"] < gpu["min_cap_w"] <= gpu["max_cap_w"] <= gpu["tdp_w"]:
        raise ScenarioError(
            f"{where}: [gpu] needs idle_power_w < min_cap_w <= max_cap_w <= tdp_w, got "
            f"{gpu['idle_power_w']:g} < {gpu['min_cap_w']:g} <= {gpu['max_cap_w']:g} <= {gpu['tdp_w']:g}"
        )
    if gpu["slowdown_temp_c"] >= gpu["shutdown_temp_c"]:
        raise ScenarioError(f"{where}: [gpu] slowdown_temp_c must be below shutdown_temp_c")
    battery = sections["battery"]
    if battery["initial_soc"] < 1.0 - battery["dod_limit"]:
        raise ScenarioError(
            f"{where}: [battery] initial_soc {battery['initial_soc']:g} is already below the DoD floor "
            f"{1.0 - battery['dod_limit']:g} (1 - dod_limit)"
        )
    training = sections["training"]
    if training["n_embd"] % training["n_head"]:
        raise ScenarioError(f"{where}: [training] n_embd must be a multiple of n_head")
