"""`sunlit run`: the whole SIL stack kept up and paced, with its ground link open.

The simulator stays the time master (lockstep): each base tick steps the world and runs the
scheduler, exactly as in `sunlit sim`. This runner only decides *when* the next tick happens —
at ``step_s / speed`` of wall time after the previous one (``speed`` = 1 is real time; ``max``
runs as fast as the stack can) — and, between ticks, services the ground link: commands in,
answers and telemetry out. Ticks that start late are counted (``late_ticks``, ``max_lag_s``),
never skipped: the simulation is what it would have been, only later.

This is wiring, so it may read the wall clock; nothing it hands to flight or sim code does.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

import zmq

from flight.downlink import ZmqDownlinkTransport
from flight.ground_link import GroundLink, GroundLinkConfig
from flight.rate_group import TickContext
from sim.scenario import Scenario, load_scenario
from sim.sil import NS_PER_S, SilRun

LINK_TELEMETRY_EVERY_TICKS = 10


@dataclass(frozen=True)
class StackOptions:
    scenario: str | Path | Scenario = "starcloud1"
    out_dir: Path | None = None
    seed: int = 0
    compute: str = "modeled"
    speed: float = 1.0                 # math.inf: as fast as possible
    duration_s: float | None = None    # None: until stopped
    host: str = "127.0.0.1"
    port: int = 5555                   # command port; telemetry port + 1, downlink port + 2 (0: any free ports)
    keys_dir: Path | None = None       # None: a fresh key set in <out>/keys
    insecure: bool = False
    ready_file: Path | None = None
    assistant_model: str = "auto"      # auto | none | onboard | a path (tools.cli.ASSISTANT_MODEL_HELP)
    train: str | None = None           # the training task (text | assistant); None: the scenario's
    dialogues: Path | None = None      # the assistant task's corpus; None: the scenario's, else written

    def __post_init__(self) -> None:
        if not (self.speed > 0):
            raise ValueError(f"speed must be > 0, got {self.speed}")
        if not 0 <= self.port <= 65533:
            raise ValueError(f"port must be in [0, 65533], got {self.port}")
        if self.insecure and self.keys_dir is not None:
            raise ValueError("--insecure takes no keys")


def _endpoint(host: str, port: int) -> str:
    return f"tcp://{host}:{port if port else '*'}"


class Stack:
    """A SIL run with a ground link, stepped by ``serve``."""

    def __init__(self, options: StackOptions) -> None:
        from sim.sil import assistant_model_source
        from tools.run_sim import default_out_dir, resolve_assistant_model, with_dialogue_corpus, with_training_task

        self.options = options
        scenario = options.scenario if isinstance(options.scenario, Scenario) else load_scenario(options.scenario)
        scenario = with_training_task(scenario, options.train, options.dialogues)
        self.assistant_model = resolve_assistant_model(options.assistant_model, options.compute)
        assistant_model_source(self.assistant_model, options.compute)  # a bad choice fails before any socket
        self.out_dir = Path(options.out_dir) if options.out_dir is not None else default_out_dir(scenario, options.seed)
        scenario = with_dialogue_corpus(scenario, self.out_dir, options.seed)
        self.context = zmq.Context()
        self.keys_dir = None if options.insecure else self._prepare_keys()
        # The store-and-forward downlink: the ground archive (`sunlit ground`) connects a DEALER.
        # Secured like the link (same server key, same allowed clients); bound once the link has
        # started the authenticator, so no handshake can happen without it.
        self._downlink_socket = self.context.socket(zmq.ROUTER)
        self._downlink_socket.setsockopt(zmq.LINGER, 0)
        self._downlink_socket.setsockopt(zmq.SNDHWM, 1000)
        if self.keys_dir is not None:
            from flight.ground_link import ZAP_DOMAIN
            from tools.keys import load_server_keys

            server = load_server_keys(self.keys_dir)
            self._downlink_socket.setsockopt(zmq.CURVE_SERVER, 1)
            self._downlink_socket.setsockopt(zmq.CURVE_PUBLICKEY, server.public)
            self._downlink_socket.setsockopt(zmq.CURVE_SECRETKEY, server.secret)
            self._downlink_socket.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
            self._downlink_socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        authorized = None
        if self.keys_dir is not None:
            from tools.keys import load_allowed_clients

            # An ack deletes data on board: only operators may run the ground archive.
            operators = {c.name for c in load_allowed_clients(self.keys_dir).values() if c.role == "operator"}
            authorized = operators.__contains__
        try:
            self.sil = SilRun(scenario, self.out_dir, seed=options.seed, compute=options.compute,
                              downlink_transport=ZmqDownlinkTransport(self._downlink_socket, authorized=authorized),
                              assistant_model=self.assistant_model)
        except BaseException:
            self._downlink_socket.close(linger=0)
            self.context.term()
            raise
        try:
            self.link = self._open_link()
            self._downlink_socket.bind(_endpoint(options.host, options.port + 2 if options.port else 0))
            self.downlink_endpoint = self._downlink_socket.getsockopt_string(zmq.LAST_ENDPOINT)
        except BaseException:
            self.sil.close()
            self._downlink_socket.close(linger=0)
            self.context.term()
            raise
        self.sil.bus.settle()
        self.ticks = 0
        self.late_ticks = 0
        self.max_lag_s = 0.0
        self._stop = False

    def _prepare_keys(self) -> Path:
        from tools.keys import init_keys

        opts = self.options
        keys_dir = Path(opts.keys_dir) if opts.keys_dir is not None else self.out_dir / "keys"
        if opts.keys_dir is None and not (keys_dir / "server.key").exists():
            init_keys(keys_dir)
        return keys_dir

    def _open_link(self) -> GroundLink:
        opts = self.options
        command_ep = _endpoint(opts.host, opts.port)
        telemetry_ep = _endpoint(opts.host, opts.port + 1 if opts.port else 0)
        config = GroundLinkConfig(insecure=opts.insecure, replay_store_path=self.out_dir / "ground_link_replay.json")
        if opts.insecure:
            return GroundLink.open(self.sil.bus, self.context, command_ep, telemetry_ep, clock=self.sil.clock,
                                   config=config)
        from tools.keys import load_allowed_clients, load_server_keys

        keys_dir = self.keys_dir
        return GroundLink.open(self.sil.bus, self.context, command_ep, telemetry_ep, clock=self.sil.clock,
                               server_keys=load_server_keys(keys_dir), allowed_clients=load_allowed_clients(keys_dir),
                               config=config)

    @property
    def command_endpoint(self) -> str:
        return self.link.sockets.command_endpoint

    @property
    def telemetry_endpoint(self) -> str:
        return self.link.sockets.telemetry_endpoint

    def info(self) -> dict[str, Any]:
        return {"command_endpoint": self.command_endpoint, "telemetry_endpoint": self.telemetry_endpoint,
                "downlink_endpoint": self.downlink_endpoint,
                "keys_dir": str(self.keys_dir) if self.keys_dir is not None else None,
                "secure": not self.options.insecure, "out_dir": str(self.out_dir), "pid": os.getpid(),
                "scenario": self.sil.scenario.name, "speed": self.options.speed}

    def stop(self, *_: Any) -> None:
        """Ask serve() to return after the current tick (safe from a signal handler)."""
        self._stop = True

    def _tick(self) -> None:
        self.sil.step()
        self.ticks += 1
        if self.ticks % LINK_TELEMETRY_EVERY_TICKS == 0:
            self.link.publish_telemetry(TickContext(tick=self.ticks, t_ns=self.sil.clock.now_ns(),
                                                    period_ns=self.sil.step_s * NS_PER_S))
        self.link.service(self.ticks)

    def serve(self, on_tick: Callable[[Stack], None] | None = None) -> None:
        """Step and service until stopped or ``duration_s`` of simulated time has passed."""
        opts = self.options
        period_s = self.sil.step_s / opts.speed
        n_ticks = math.ceil(opts.duration_s / self.sil.step_s) if opts.duration_s is not None else None
        poller = zmq.Poller()
        poller.register(self.link.command_socket, zmq.POLLIN)
        start = time.monotonic()
        self.link.service(self.ticks)
        while not self._stop and (n_ticks is None or self.ticks < n_ticks):
            if math.isfinite(period_s):
                deadline = start + (self.ticks + 1) * period_s
                while not self._stop:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    # Wake for client traffic at once; otherwise sleep to the tick (in slices, so
                    # a stop request is seen).
                    if poller.poll(timeout=min(remaining, 0.2) * 1000):
                        self.link.service(self.ticks)
                lag_s = time.monotonic() - deadline
                if lag_s > period_s:
                    self.late_ticks += 1
                self.max_lag_s = max(self.max_lag_s, lag_s)
            self._tick()
            if on_tick is not None:
                on_tick(self)

    def close(self) -> dict[str, Any]:
        """Finish the run (flush the store, summary.json) and release the link; returns the summary."""
        try:
            self.link.close()
        finally:
            summary = self.sil.finish()
            self._downlink_socket.close(linger=0)
            self.context.term()
        summary.update({"ground_link": dict(self.link.counters), "late_ticks": self.late_ticks,
                        "max_lag_s": round(self.max_lag_s, 3), "speed": self.options.speed})
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def banner(stack: Stack) -> str:
    info = stack.info()
    speed = "as fast as it can" if math.isinf(stack.options.speed) else f"{stack.options.speed:g}x real time"
    lines = [
        f"Sunlit stack up: {info['scenario']} ({stack.options.compute} compute), {speed}",
        f"  commands   {info['command_endpoint']}",
        f"  telemetry  {info['telemetry_endpoint']}",
        f"  downlink   {info['downlink_endpoint']}   (store-and-forward, in ground passes)",
        f"  assistant  {_assistant_model_text(stack)}",
    ]
    if info["keys_dir"]:
        lines.append(f"  security   CURVE; keys in {info['keys_dir']} (clients: {', '.join(_client_names(stack))})")
        lines.append(f"  console    sunlit console {info['command_endpoint']} --keys {info['keys_dir']}")
        lines.append(f"  archive    sunlit ground {info['downlink_endpoint']} --archive ground.db --keys {info['keys_dir']}")
    else:
        lines.append("  security   NONE (--insecure): anyone who can reach the port may command")
        lines.append(f"  console    sunlit console {info['command_endpoint']} --insecure")
        lines.append(f"  archive    sunlit ground {info['downlink_endpoint']} --archive ground.db --insecure")
    lines.append(f"  output     {info['out_dir']}   (Ctrl-C stops and writes summary.json)")
    return "\n".join(lines)


def _assistant_model_text(stack: Stack) -> str:
    if stack.sil.assistant_source is None:
        return "templates (--assistant-model onboard for the model's words)"
    return f"{_model_source_text(stack.sil.assistant_source)}; answers on GPU time the power manager grants"


def _model_source_text(source: Any) -> str:
    from flight.assistant.model import CheckpointAssistantModel

    if isinstance(source, CheckpointAssistantModel):
        fallback = getattr(source.fallback, "kind", None) and _model_source_text(source.fallback)
        return (f"the newest verified checkpoint fine-tuned on board in {source.store.directory}"
                + (f", until there is one {fallback}" if fallback else ""))
    what = ("the shipped onboard model" if source.path is None
            else f"Hugging Face model {source.path}" if source.kind == "hf" else f"weights {source.path}")
    return f"{what}, loaded at the first question"


def _client_names(stack: Stack) -> list[str]:
    folder = stack.keys_dir / "clients" if stack.keys_dir is not None else None
    return sorted(p.stem for p in folder.glob("*.key")) if folder is not None and folder.is_dir() else []


def run_stack(options: StackOptions, out: TextIO = sys.stdout) -> dict[str, Any]:
    stack = Stack(options)
    previous = {sig: signal.signal(sig, stack.stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(banner(stack), file=out, flush=True)
        if options.ready_file is not None:
            tmp = Path(str(options.ready_file) + ".tmp")
            tmp.write_text(json.dumps(stack.info()) + "\n")
            tmp.replace(options.ready_file)
        stack.serve()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        summary = stack.close()
    print(f"Sunlit stack stopped after {summary['sim_seconds']} simulated s; "
          f"{summary['ground_link']['forwarded']} commands forwarded, {summary['late_ticks']} late ticks.",
          file=out, flush=True)
    return summary
