"""Power manager: each frame, turn EPS, navigation and GPU telemetry into a GPU state, a power cap
and a grant for payload work, so that payload work never takes the battery below its
depth-of-discharge floor.

Policy (energy bookkeeping over the predicted eclipse schedule):

- The floor is ``(1 - dod_limit) * capacity`` plus a margin. Whatever the battery holds above the
  floor, minus what the bus alone needs to get through the rest of the current (or the next)
  eclipse, is *spendable* by the payload.
- In sunlight the battery is recharged first, at the rate that fills it by the next eclipse entry
  (a full battery at entry maximises what the payload may spend in the dark); the payload gets the
  array power left over after the bus and that charge rate.
- In eclipse the spendable energy is spread evenly over the rest of the eclipse (lower caps are
  more energy-efficient for the GPU), planned over at least ``min_planning_window_s`` so that the
  last minutes do not amplify sensor noise; if the even share is below the GPU's minimum cap, the GPU runs
  at its minimum cap until the spendable energy is used, then is switched off.
- Hysteresis against flapping: the GPU is switched on only if it can run for ``min_on_time_s``,
  and the boot energy is charged to the payload budget.

The energy allowance of a frame is what the GPU may draw in it at the decided cap; payload jobs'
declared demand (``demand_kind``, ``demand_priority``, ``demand_ref_s`` in their telemetry) is
admitted against it in priority order (``flight.admission``), within what the operating mode
permits (``flight.modes``). The GPU stays off when the mode permits nothing or nothing permitted is
wanted.

The manager publishes its decision and grants on ``tlm.power`` (read by payload jobs in the same
frame, before the GPU command executes, so a job can checkpoint before the power goes) and commands
the EPS load switch and the GPU power cap only when they must change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flight.admission import GpuPerformanceModel, JobDemand, admit
from flight.bus import Bus
from flight.events import EventReporter
from flight.modes import PERMITTED_WORK
from flight.rate_group import TickContext

# Caps are commanded in steps of this size: NVML takes integer milliwatts, and re-commanding a cap
# for a 1 W change every frame would only churn the command log.
CAP_RESOLUTION_W = 5.0


@dataclass(frozen=True)
class PowerManagerConfig:
    dod_limit: float = 0.30
    reserve_margin_fraction: float = 0.03
    min_on_time_s: float = 300.0
    gpu_idle_power_w: float = 80.0
    gpu_boot_time_s: float = 30.0
    # Below this slowdown margin the cap is walked down, well before the GPU throttles itself.
    thermal_guard_c: float = 5.0
    # Extra payload power required to switch the GPU on, over its minimum cap.
    turn_on_hysteresis_w: float = 50.0
    # With no eclipse predicted, the battery is topped up over this horizon.
    no_eclipse_horizon_s: float = 5400.0
    # Rates are never planned over less than this: near a deadline (eclipse entry or exit) a
    # shrinking denominator would turn sensor noise into wild cap swings.
    min_planning_window_s: float = 600.0
    # Through a penumbra a running GPU rides on the battery instead of flapping off and on, if the
    # battery holds this many seconds at the minimum cap above the floor.
    ride_through_s: float = 120.0
    performance: GpuPerformanceModel = GpuPerformanceModel()
    # "manager": the policy above. The baselines it is compared with (tools/policies.py):
    # "always_on": full cap until the battery reaches its floor, back on once it has recovered by
    # baseline_hysteresis_fraction; "sunlight_fixed": a fixed cap in sunlight, off in eclipse.
    policy: str = "manager"
    baseline_fixed_cap_w: float = 450.0
    baseline_hysteresis_fraction: float = 0.05
    # Telemetry topics of the payload jobs, whose demand (kind, priority, work wanted) is admitted;
    # the grant's name is the topic's last part. The assistant's model answers are inference work.
    job_topics: tuple[str, ...] = ("tlm.training", "tlm.inference", "tlm.assistant")


POLICIES = ("manager", "always_on", "sunlight_fixed")


@dataclass(frozen=True)
class PowerDecision:
    gpu_on: bool
    cap_w: float
    payload_power_w: float
    spendable_wh: float
    reason: str


class PowerManager:
    def __init__(self, bus: Bus, config: PowerManagerConfig) -> None:
        if config.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {config.policy!r}")
        self.config = config
        self._pub = bus.publisher("power")
        self._events = EventReporter(bus, "power")
        self._tlm = bus.subscribe(["tlm.eps", "tlm.nav", "tlm.gpu", "tlm.modes", *config.job_topics],
                                  policy="latest", name="power-manager")
        self._responses = bus.subscribe(["rsp.eps", "rsp.gpu"], name="power-manager-responses")
        self._command_id = 0
        self._gpu_on_commanded: bool | None = None
        self._last_reason = ""
        self.decision: PowerDecision | None = None
        self.grants: dict[str, float] = {}
        self.commands_sent = 0
        self.command_failures = 0
        self.gpu_on_cycles = 0
        self.input_errors = 0
        # Per job topic: (demand_kind, demand_priority, demand_ref_s as published, the JobDemand
        # built from them): a job publishes the same demand frame after frame, so it is built and
        # validated once per change.
        self._demand_of: dict[str, tuple[Any, Any, Any, JobDemand]] = {}
        self._job_names = tuple((topic, topic.split(".", 1)[1]) for topic in config.job_topics)
        # The last admission's inputs (demands, cap, frame, permitted kinds) and its grants by name:
        # admission is a pure function of them, and they change far less often than every frame.
        self._admitted: tuple[tuple, dict[str, float]] | None = None

    # -- the frame ------------------------------------------------------------------------------

    def run(self, ctx: TickContext) -> None:
        self._tlm.drain()
        self._check_responses()
        latest = self._tlm.latest
        eps, nav, gpu = latest("tlm.eps"), latest("tlm.nav"), latest("tlm.gpu")
        if eps is None or nav is None or gpu is None:
            return  # not all inputs have arrived yet: command nothing
        frame_s = ctx.period_ns / 1e9
        modes = latest("tlm.modes")
        mode = modes.body.get("mode") if modes is not None else "NOMINAL"
        permitted = PERMITTED_WORK.get(mode, ())
        try:
            demands = self._demands()
            decision = self.decide(eps.body, nav.body, gpu.body, frame_s)
        except (KeyError, TypeError, ValueError) as exc:
            self.input_errors += 1
            demands = []
            decision = PowerDecision(False, 0.0, 0.0, 0.0, f"bad telemetry, GPU off for safety: {exc}")
        wanted = [d for d in demands if d.kind in permitted and d.work_ref_s > 0.0]
        if decision.gpu_on and not permitted:
            decision = PowerDecision(False, 0.0, decision.payload_power_w, decision.spendable_wh,
                                     f"mode {mode}: no payload work permitted")
        elif decision.gpu_on and not wanted:
            decision = PowerDecision(False, 0.0, decision.payload_power_w, decision.spendable_wh,
                                     "no admissible payload demand")
        self.grants = self._admit(wanted, decision.cap_w, frame_s, permitted) if decision.gpu_on else {}
        self.decision = decision
        self._publish(decision, mode, frame_s)
        self._actuate(decision, gpu.body)

    def _admit(self, wanted: list[JobDemand], cap_w: float, frame_s: float,
               permitted: tuple[str, ...]) -> dict[str, float]:
        """Grants by job name; the same dict again while the inputs are equal (never mutated: it
        is only published, and replaced)."""
        key = (tuple(wanted), cap_w, frame_s, permitted)
        admitted = self._admitted
        if admitted is not None and admitted[0] == key:
            return admitted[1]
        grants = admit(wanted, cap_w=cap_w, frame_s=frame_s, allowance_wh=cap_w * frame_s / 3600.0,
                       permitted_kinds=permitted, model=self.config.performance)
        by_name = {g.name: g.seconds for g in grants}
        self._admitted = (key, by_name)
        return by_name

    def _demands(self) -> list[JobDemand]:
        demands = []
        latest = self._tlm.latest
        cache = self._demand_of
        for topic, name in self._job_names:
            message = latest(topic)
            if message is None:
                continue
            body = message.body
            ref = body.get("demand_ref_s")
            if ref is None:
                continue
            kind, priority = body["demand_kind"], body["demand_priority"]
            cached = cache.get(topic)
            # Equal published values build an equal demand (int() and float() of equal numbers
            # agree); a value that fails validation is never cached, so it fails every frame.
            if cached is not None and cached[0] == kind and cached[1] == priority and cached[2] == ref:
                demands.append(cached[3])
                continue
            demand = JobDemand(name=name, kind=kind, priority=int(priority), work_ref_s=float(ref))
            cache[topic] = (kind, priority, ref, demand)
            demands.append(demand)
        return demands

    def decide(self, eps: dict[str, Any], nav: dict[str, Any], gpu: dict[str, Any], dt_s: float) -> PowerDecision:
        if self.config.policy == "always_on":
            return self._decide_always_on(eps, gpu)
        if self.config.policy == "sunlight_fixed":
            return self._decide_sunlight_fixed(eps, nav, gpu)
        return self._decide_manager(eps, nav, gpu, dt_s)

    def _decide_always_on(self, eps: dict[str, Any], gpu: dict[str, Any]) -> PowerDecision:
        capacity_wh = float(eps["battery_capacity_wh"])
        energy_wh = float(eps["battery_soc"]) * capacity_wh
        floor_wh = (1.0 - self.config.dod_limit) * capacity_wh
        resume_wh = floor_wh + self.config.baseline_hysteresis_fraction * capacity_wh
        on = energy_wh > (floor_wh if gpu["state"] != "off" else resume_wh)
        cap_w = float(gpu["power_limit_max_w"]) if on else 0.0
        return PowerDecision(on, cap_w, cap_w, energy_wh - floor_wh,
                             "baseline always-on: full cap" if on else "baseline always-on: battery at its floor")

    def _decide_sunlight_fixed(self, eps: dict[str, Any], nav: dict[str, Any], gpu: dict[str, Any]) -> PowerDecision:
        capacity_wh = float(eps["battery_capacity_wh"])
        energy_wh = float(eps["battery_soc"]) * capacity_wh
        floor_wh = (1.0 - self.config.dod_limit) * capacity_wh
        on = not nav["in_umbra"] and energy_wh > floor_wh
        cap_w = min(max(self.config.baseline_fixed_cap_w, float(gpu["power_limit_min_w"])),
                    float(gpu["power_limit_max_w"])) if on else 0.0
        return PowerDecision(on, cap_w, cap_w, energy_wh - floor_wh,
                             "baseline sunlight-only: fixed cap" if on else "baseline sunlight-only: eclipse")

    def _decide_manager(self, eps: dict[str, Any], nav: dict[str, Any], gpu: dict[str, Any],
                        dt_s: float) -> PowerDecision:
        cfg = self.config
        capacity_wh = float(eps["battery_capacity_wh"])
        energy_wh = float(eps["battery_soc"]) * capacity_wh
        floor_wh = (1.0 - cfg.dod_limit + cfg.reserve_margin_fraction) * capacity_wh
        eta_c = float(eps["battery_charge_efficiency"])
        eta_d = float(eps["battery_discharge_efficiency"])
        bus_w = float(eps["bus_load_w"])
        solar_w = float(eps["solar_power_w"])
        min_cap_w = float(gpu["power_limit_min_w"])
        max_cap_w = float(gpu["power_limit_max_w"])
        gpu_is_on = gpu["state"] != "off"
        boot_wh = 0.0 if gpu_is_on else cfg.gpu_idle_power_w * cfg.gpu_boot_time_s / 3600.0

        start_in_s, end_in_s = nav["umbra_start_in_s"], nav["umbra_end_in_s"]
        in_umbra = bool(nav["in_umbra"])
        if energy_wh <= floor_wh:
            return PowerDecision(False, 0.0, 0.0, energy_wh - floor_wh, "battery at reserve floor")

        if in_umbra and end_in_s is not None:
            remaining_s = max(float(end_in_s), dt_s)
            spendable_wh = energy_wh - floor_wh - bus_w * remaining_s / 3600.0 / eta_d - boot_wh
            # Battery-side energy to GPU watts, spread over the rest of the eclipse.
            spread_w = spendable_wh * 3600.0 * eta_d / max(remaining_s, cfg.min_planning_window_s)
            max_by_discharge_w = float(eps["battery_max_discharge_w"]) - bus_w
            if spread_w >= min_cap_w:
                payload_w = min(spread_w, max_by_discharge_w)
                reason = "eclipse: spendable energy spread over the rest of the eclipse"
            else:
                # Run at the most frugal cap while the budget lasts.
                frames_left = spendable_wh * 3600.0 * eta_d / (min_cap_w * dt_s)
                needed_frames = 2.0 if gpu_is_on else cfg.min_on_time_s / dt_s
                payload_w = min_cap_w if frames_left >= needed_frames else 0.0
                reason = ("eclipse: minimum cap while the budget lasts" if payload_w
                          else "eclipse: payload budget spent")
        else:
            if start_in_s is None:
                time_to_entry_s, eclipse_s = cfg.no_eclipse_horizon_s, 0.0
            else:
                time_to_entry_s = max(float(start_in_s), dt_s)
                eclipse_s = float(end_in_s) - float(start_in_s) if end_in_s is not None else 0.0
            bus_reserve_wh = bus_w * eclipse_s / 3600.0 / eta_d
            spendable_wh = energy_wh - floor_wh - bus_reserve_wh - boot_wh
            # Charge at the rate that fills the battery by eclipse entry, within the charge limit.
            window_s = max(time_to_entry_s, cfg.min_planning_window_s)
            charge_w = (capacity_wh - energy_wh) * 3600.0 / window_s / eta_c
            charge_w = min(max(charge_w, 0.0), float(eps["battery_max_charge_w"]))
            if spendable_wh < 0.0:
                # Not even the bus's eclipse needs are covered: everything goes into the battery.
                charge_w = float(eps["battery_max_charge_w"])
            payload_w = solar_w - bus_w - charge_w
            reason = "sunlight: array surplus after bus and recharge"
            if start_in_s is not None and not gpu_is_on and time_to_entry_s < cfg.min_on_time_s:
                payload_w = min(payload_w, 0.0)
                reason = "sunlight: too close to eclipse to boot the GPU"
            in_penumbra = 0.0 < float(nav.get("sunlit_fraction", 1.0)) < 1.0
            ride_through_wh = min_cap_w * cfg.ride_through_s / 3600.0 / eta_d
            if gpu_is_on and in_penumbra and payload_w < min_cap_w and energy_wh - floor_wh >= ride_through_wh:
                payload_w = min_cap_w
                reason = "penumbra: riding through on the battery"

        # In eclipse the minimum-on-time check above already guards against flapping.
        threshold_w = min_cap_w if gpu_is_on or in_umbra else min_cap_w + cfg.turn_on_hysteresis_w
        if payload_w < threshold_w:
            return PowerDecision(False, 0.0, max(payload_w, 0.0), spendable_wh,
                                 reason + " (below the GPU's minimum cap)")
        cap_w = min(payload_w, max_cap_w)
        margin_c = gpu.get("slowdown_margin_c")
        if isinstance(margin_c, (int, float)) and margin_c < cfg.thermal_guard_c:
            # Shed heat before the GPU's own slowdown: scale the cap down with the lost margin.
            scale = max(margin_c, 0.0) / cfg.thermal_guard_c
            cap_w = min(cap_w, min_cap_w + (max_cap_w - min_cap_w) * scale)
            reason += "; thermal guard"
        cap_w = max(min_cap_w, CAP_RESOLUTION_W * int(cap_w / CAP_RESOLUTION_W))
        return PowerDecision(True, cap_w, payload_w, spendable_wh, reason)

    # -- outputs --------------------------------------------------------------------------------

    def _publish(self, d: PowerDecision, mode: str, frame_s: float) -> None:
        self._pub.publish("tlm.power", {
            "gpu_on": d.gpu_on,
            "cap_w": d.cap_w,
            "payload_power_w": d.payload_power_w,
            "allowance_wh": d.cap_w * frame_s / 3600.0 if d.gpu_on else 0.0,
            "spendable_wh": d.spendable_wh,
            "mode": mode,
            "grants": self.grants,
            "reason": d.reason,
            "gpu_on_cycles": self.gpu_on_cycles,
            "commands_sent": self.commands_sent,
            "command_failures": self.command_failures,
        })
        if d.reason != self._last_reason:
            self._events.emit("ACTIVITY_LO", "POWER_POLICY", d.reason, gpu_on=d.gpu_on, cap_w=d.cap_w)
            self._last_reason = d.reason

    def _actuate(self, d: PowerDecision, gpu: dict[str, Any]) -> None:
        if d.gpu_on and abs(float(gpu["power_cap_w"]) - d.cap_w) >= CAP_RESOLUTION_W - 1e-9:
            self._command("gpu", "SET_POWER_CAP", {"cap_w": d.cap_w})
        if d.gpu_on != self._gpu_on_commanded:
            self._command("eps", "SET_SWITCH", {"switch": "gpu", "on": d.gpu_on})
            if d.gpu_on:
                self.gpu_on_cycles += 1
            self._events.emit("ACTIVITY_HI", "GPU_POWER", f"GPU {'on' if d.gpu_on else 'off'}: {d.reason}")
            self._gpu_on_commanded = d.gpu_on

    def _command(self, service: str, opcode: str, args: dict[str, Any]) -> None:
        self._command_id += 1
        self.commands_sent += 1
        self._pub.publish(f"cmd.{service}", {"id": self._command_id, "opcode": opcode, "args": args})

    def _check_responses(self) -> None:
        for message in self._responses.drain():
            if message.body.get("to") != "power":
                continue  # an answer to someone else's command (the dispatcher's, say)
            if message.body.get("status") != "OK":
                self.command_failures += 1
                self._events.emit("WARNING_HI", "COMMAND_FAILED",
                                  f"{message.topic} {message.body.get('opcode')}: "
                                  f"{message.body.get('status')} {message.body.get('reason')}")
