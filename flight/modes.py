"""Operating modes of the payload, with guarded transitions.

- SAFE: payload off; entered autonomously on a fault (battery below its DoD floor, GPU thermal
  trip, EPS telemetry lost) or by command; left only by command, through a guard.
- IDLE: payload off by choice; the bus is healthy.
- LOW_POWER: inference only; entered autonomously when the battery nears its floor, left
  autonomously when it has recovered (if it was entered autonomously).
- NOMINAL: training and inference.

Every transition is an event with its reason; a commanded transition whose guard fails is refused
with the reason (``SET_MODE`` answers VALIDATION_ERROR for an unknown mode, EXECUTION_ERROR when the
guard fails), and the refusal is an event and a counter too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flight.bus import Bus
from flight.command_server import CommandRejected, CommandServer, require_choice
from flight.events import EventReporter
from flight.rate_group import TickContext

MODES = ("SAFE", "IDLE", "LOW_POWER", "NOMINAL")
# What payload work each mode permits.
PERMITTED_WORK: dict[str, tuple[str, ...]] = {
    "SAFE": (),
    "IDLE": (),
    "LOW_POWER": ("inference",),
    "NOMINAL": ("inference", "training"),
}


@dataclass(frozen=True)
class ModeConfig:
    dod_limit: float = 0.30
    # NOMINAL (and leaving SAFE) needs this much state of charge above the floor.
    nominal_soc_margin: float = 0.02
    # Below this margin above the floor, NOMINAL drops to LOW_POWER by itself.
    low_power_soc_margin: float = 0.005
    # NOMINAL needs this much GPU slowdown margin when the GPU is on.
    thermal_guard_c: float = 2.0
    # EPS telemetry older than this means the power state is unknown: SAFE.
    telemetry_timeout_s: float = 10.0
    initial_mode: str = "NOMINAL"
    # Off only to judge a power policy on its own (tools/policies.py): a policy that breaks the
    # floor would otherwise be latched in SAFE for the rest of the comparison.
    safe_below_floor: bool = True

    def __post_init__(self) -> None:
        if self.initial_mode not in MODES:
            raise ValueError(f"initial_mode must be one of {', '.join(MODES)}, got {self.initial_mode!r}")


class ModeManager:
    def __init__(self, bus: Bus, config: ModeConfig = ModeConfig()) -> None:
        self.config = config
        self.mode = config.initial_mode
        self._pub = bus.publisher("modes")
        self._events = EventReporter(bus, "modes")
        self._tlm = bus.subscribe(["tlm.eps", "tlm.gpu"], policy="latest", name="mode-manager")
        self.commands = CommandServer(bus, "modes", {"SET_MODE": self._set_mode_command})
        self._autonomous_low_power = False
        self._gpu_trips_seen: int | None = None
        self._now_s = 0.0
        self.entered_at_s = 0.0
        self.transitions = 0
        self.refusals = 0
        self.last_reason = "initial mode"

    @property
    def permitted_work(self) -> tuple[str, ...]:
        return PERMITTED_WORK[self.mode]

    # -- the frame ------------------------------------------------------------------------------

    def run(self, ctx: TickContext) -> None:
        self._now_s = ctx.t_ns / 1e9
        self._tlm.drain()
        self.commands.execute_commands(ctx)
        self._autonomous(ctx)
        self._pub.publish("tlm.modes", {
            "mode": self.mode,
            "permitted_work": list(self.permitted_work),
            "in_mode_s": self._now_s - self.entered_at_s,
            "transitions": self.transitions,
            "refusals": self.refusals,
            "reason": self.last_reason,
            "cmd_accepted": self.commands.accepted,
            "cmd_rejected": self.commands.rejected,
        })

    def _autonomous(self, ctx: TickContext) -> None:
        eps = self._tlm.latest("tlm.eps")
        gpu = self._tlm.latest("tlm.gpu")
        if eps is None or self._now_s - eps.t_ns / 1e9 > self.config.telemetry_timeout_s:
            if self.mode != "SAFE" and (eps is not None or self._now_s > self.config.telemetry_timeout_s):
                self._enter("SAFE", "EPS telemetry lost: power state unknown")
            return
        soc = float(eps.body["battery_soc"])
        floor = 1.0 - self.config.dod_limit
        if gpu is not None:
            trips = int(gpu.body.get("thermal_trips", 0))
            if self._gpu_trips_seen is not None and trips > self._gpu_trips_seen and self.mode != "SAFE":
                self._enter("SAFE", f"GPU thermal trip (trips: {trips})")
            self._gpu_trips_seen = trips
        if self.mode == "SAFE":
            return
        if soc < floor and self.config.safe_below_floor:
            self._enter("SAFE", f"battery SoC {soc:.1%} below the DoD floor {floor:.0%}")
        elif self.mode == "NOMINAL" and soc < floor + self.config.low_power_soc_margin:
            self._enter("LOW_POWER", f"battery SoC {soc:.1%} within {self.config.low_power_soc_margin:.1%} of the floor")
            self._autonomous_low_power = True
        elif self.mode == "LOW_POWER" and self._autonomous_low_power and self.guard("NOMINAL") is None:
            self._enter("NOMINAL", f"battery recovered to {soc:.1%}")

    # -- transitions ----------------------------------------------------------------------------

    def guard(self, target: str) -> str | None:
        """Why a transition to target is not allowed now, or None if it is."""
        if target in ("SAFE", "IDLE"):
            return None
        eps = self._tlm.latest("tlm.eps")
        if eps is None:
            return "no EPS telemetry yet: power state unknown"
        floor = 1.0 - self.config.dod_limit
        soc = float(eps.body["battery_soc"])
        needed = floor + (self.config.nominal_soc_margin if target == "NOMINAL" else self.config.low_power_soc_margin)
        if soc < needed:
            return f"battery SoC {soc:.1%} is below the {needed:.1%} that {target} needs"
        gpu = self._tlm.latest("tlm.gpu")
        if target == "NOMINAL" and gpu is not None and gpu.body.get("state") != "off":
            margin = gpu.body.get("slowdown_margin_c")
            if isinstance(margin, (int, float)) and margin < self.config.thermal_guard_c:
                return f"GPU thermal margin {margin:.1f} C is below the {self.config.thermal_guard_c:g} C NOMINAL needs"
        return None

    def request(self, target: str, reason: str) -> str | None:
        """Try a transition; returns None on success or the reason it was refused."""
        refused = self.guard(target)
        if refused is not None:
            self.refusals += 1
            self._events.emit("WARNING_LO", "MODE_REFUSED", f"{self.mode} -> {target} refused: {refused}",
                              target=target)
            return refused
        self._autonomous_low_power = False
        if target != self.mode:
            self._enter(target, reason)
        return None

    def _enter(self, target: str, reason: str) -> None:
        previous, self.mode = self.mode, target
        self.entered_at_s = self._now_s
        self.transitions += 1
        self.last_reason = reason
        if target == "SAFE":
            self._events.emit("WARNING_HI", "SAFE_MODE_ENTERED", f"{previous} -> {target}: {reason}",
                              previous=previous, mode=target)
            return
        self._events.emit("ACTIVITY_HI", "MODE_CHANGED", f"{previous} -> {target}: {reason}",
                          previous=previous, mode=target)

    def _set_mode_command(self, args: dict[str, Any]) -> None:
        target = require_choice(args, "mode", MODES)
        refused = self.request(target, "commanded")
        if refused is not None:
            raise CommandRejected("EXECUTION_ERROR", f"mode {target} refused: {refused}")
