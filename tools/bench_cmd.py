"""Command round trip over tcp loopback: a client process sends a command on ``cmd.gpu`` to a
stack in another process, whose GPU service (``hal.service.DeviceService`` over a sim GPU in a
``sim.world.World``) executes it and answers on ``rsp.gpu``; the client times send -> response.

Both ends use the bus as any console would: each side binds its Bus on ``tcp://127.0.0.1:*``,
the stack's command subscription ``connect``s to the client's endpoint and the client reads the
responses through ``connect_subscription``. The stack waits on its command socket (``poll``) and
executes whatever arrived, so the figure is the bus + service path, not a frame period.

The baseline, measured in the same run: the same exchange with raw pyzmq PUB/SUB + msgpack
(same frames, same tcp loopback, an echo process that answers without bus or service).

Slow joiners: the two tcp connections come up asynchronously, so the client first sends NOOPs
from a separate handshake source until one is answered. The measured stream starts at seq 0
after that, and the stack reports how many of its messages it saw dropped (expected: 0).
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from dataclasses import dataclass

import msgpack
import zmq

from flight.bus import Bus, connect_subscription
from flight.clock import MonotonicClock

ENDPOINT = "tcp://127.0.0.1:*"
HANDSHAKE_SOURCE = "bench-handshake"
CLIENT_SOURCE = "bench-client"
START_TIMEOUT_S = 120.0
RESPONSE_TIMEOUT_MS = 5_000


def serve_gpu(client_endpoint: str, conn, stop) -> None:
    """The stack (runs in the child process): GPU service on a bus bound to tcp loopback."""
    from hal.service import DeviceService
    from hal.sim_backends import SimGpu
    from sim.scenario import load_scenario
    from sim.world import World

    world = World(load_scenario("starcloud1"))
    world.set_switch("gpu", True)
    clock = MonotonicClock(world.epoch_utc)
    bus = Bus(clock.now_ns, name="bench-stack")
    try:
        endpoint = bus.bind(ENDPOINT)
        service = DeviceService(SimGpu(world, seed=0, noise=False), bus)
        commands = service.commands.subscription
        commands.connect(client_endpoint)
        bus.settle()
        conn.send(endpoint)
        while not stop.is_set():
            if commands.poll(50):
                service.execute_commands()
        stats = commands.stats()
        conn.send({"accepted": service.commands_accepted, "rejected": service.commands_rejected,
                   "dropped": stats["dropped"], "malformed": stats["malformed"]})
    finally:
        bus.close()


@dataclass
class CmdRtt:
    samples_us: list[float]
    warmup: int
    handshake_sends: int
    server: dict  # the stack's command counts and drops per topic

    @property
    def p50_us(self) -> float:
        return statistics.median(self.samples_us)

    @property
    def p99_us(self) -> float:
        ordered = sorted(self.samples_us)
        return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def _await_response(responses, command_id: int) -> dict:
    while True:
        if not responses.poll(RESPONSE_TIMEOUT_MS):
            raise RuntimeError(f"no response to command {command_id} within {RESPONSE_TIMEOUT_MS} ms")
        for message in responses.drain():
            if message.body.get("id") == command_id:
                return message.body


def _stop(process, stop) -> None:
    """Ask the stack process to stop, and make sure it has."""
    stop.set()
    if process is not None:
        process.join(timeout=10)
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)


def measure_cmd_rtt(round_trips: int = 5_000, warmup: int = 500) -> CmdRtt:
    ctx = multiprocessing.get_context("spawn")
    clock = MonotonicClock()
    bus = Bus(clock.now_ns, name="bench-client")
    stop = ctx.Event()
    parent_conn, child_conn = ctx.Pipe()
    process = None
    responses = None
    try:
        client_endpoint = bus.bind(ENDPOINT)
        process = ctx.Process(target=serve_gpu, args=(client_endpoint, child_conn, stop), daemon=True)
        process.start()
        if not parent_conn.poll(START_TIMEOUT_S):
            raise RuntimeError("the stack process did not start")
        responses = connect_subscription(parent_conn.recv(), ["rsp.gpu"], name="bench-responses")

        handshake = bus.publisher(HANDSHAKE_SOURCE)
        sends = 0
        deadline = time.monotonic() + START_TIMEOUT_S
        answered = False
        while not answered:
            if time.monotonic() > deadline:
                raise RuntimeError("the stack never answered a NOOP over tcp")
            handshake.publish("cmd.gpu", {"id": -1 - sends, "opcode": "NOOP", "args": {}})
            sends += 1
            answered = responses.poll(20) and bool(responses.drain())
        while responses.poll(100):  # answers to NOOPs still in flight
            responses.drain()

        client = bus.publisher(CLIENT_SOURCE)
        samples_us: list[float] = []
        for i in range(warmup + round_trips):
            body = {"id": i, "opcode": "SET_POWER_CAP", "args": {"cap_w": 200.0 + i % 500}}
            t0 = time.perf_counter_ns()
            client.publish("cmd.gpu", body)
            answer = _await_response(responses, i)
            t1 = time.perf_counter_ns()
            if answer["status"] != "OK":
                raise RuntimeError(f"command {i} was answered {answer['status']}: {answer['reason']}")
            if i >= warmup:
                samples_us.append((t1 - t0) / 1e3)
        stop.set()
        if not parent_conn.poll(START_TIMEOUT_S):
            raise RuntimeError("the stack process did not report its counters")
        server = parent_conn.recv()
    finally:
        _stop(process, stop)
        if responses is not None:
            responses.close()
        bus.close()
    return CmdRtt(samples_us=samples_us, warmup=warmup, handshake_sends=sends, server=server)


# --------------------------------------------------------------------------- raw baseline

_CMD_PREFIX = b"cmd.gpu\x00"
_RSP_PREFIX = b"rsp.gpu\x00"


def serve_raw_echo(client_endpoint: str, conn, stop) -> None:
    """Raw pyzmq + msgpack: answer every command frame with an OK response frame."""
    context = zmq.Context()
    pub, sub = context.socket(zmq.PUB), context.socket(zmq.SUB)
    try:
        for socket in (pub, sub):
            socket.setsockopt(zmq.LINGER, 0)
        pub.bind(ENDPOINT)
        sub.setsockopt(zmq.SUBSCRIBE, _CMD_PREFIX)
        sub.connect(client_endpoint)
        conn.send(pub.getsockopt_string(zmq.LAST_ENDPOINT))
        seq = 0
        while not stop.is_set():
            if not sub.poll(50):
                continue
            while True:
                try:
                    frame = sub.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                body = msgpack.unpackb(frame[len(_CMD_PREFIX):])[3]
                answer = {"id": body["id"], "opcode": body["opcode"], "status": "OK", "reason": ""}
                pub.send(_RSP_PREFIX + msgpack.packb([seq, time.monotonic_ns(), "gpu", answer]))
                seq += 1
        conn.send({"answered": seq})
    finally:
        pub.close()
        sub.close()
        context.term()


def measure_raw_rtt(round_trips: int = 5_000, warmup: int = 500) -> CmdRtt:
    ctx = multiprocessing.get_context("spawn")
    context = zmq.Context()
    pub, sub = context.socket(zmq.PUB), context.socket(zmq.SUB)
    stop = ctx.Event()
    parent_conn, child_conn = ctx.Pipe()
    process = None
    try:
        for socket in (pub, sub):
            socket.setsockopt(zmq.LINGER, 0)
        pub.bind(ENDPOINT)
        process = ctx.Process(target=serve_raw_echo, daemon=True,
                              args=(pub.getsockopt_string(zmq.LAST_ENDPOINT), child_conn, stop))
        process.start()
        if not parent_conn.poll(START_TIMEOUT_S):
            raise RuntimeError("the echo process did not start")
        sub.setsockopt(zmq.SUBSCRIBE, _RSP_PREFIX)
        sub.connect(parent_conn.recv())
        seq = 0

        def send(command_id: int, opcode: str, args: dict) -> None:
            nonlocal seq
            body = {"id": command_id, "opcode": opcode, "args": args}
            pub.send(_CMD_PREFIX + msgpack.packb([seq, time.monotonic_ns(), CLIENT_SOURCE, body]))
            seq += 1

        def answer_to(command_id: int, timeout_ms: int) -> bool:
            while sub.poll(timeout_ms):
                frame = sub.recv()
                if msgpack.unpackb(frame[len(_RSP_PREFIX):])[3]["id"] == command_id:
                    return True
            return False

        sends = 0
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if time.monotonic() > deadline:
                raise RuntimeError("the echo process never answered over tcp")
            sends += 1
            send(-sends, "NOOP", {})
            if answer_to(-sends, 20):
                break
        while sub.poll(100):
            sub.recv()
        samples_us: list[float] = []
        for i in range(warmup + round_trips):
            t0 = time.perf_counter_ns()
            send(i, "SET_POWER_CAP", {"cap_w": 200.0 + i % 500})
            if not answer_to(i, RESPONSE_TIMEOUT_MS):
                raise RuntimeError(f"no echo of command {i} within {RESPONSE_TIMEOUT_MS} ms")
            t1 = time.perf_counter_ns()
            if i >= warmup:
                samples_us.append((t1 - t0) / 1e3)
        stop.set()
        server = parent_conn.recv() if parent_conn.poll(START_TIMEOUT_S) else {}
    finally:
        _stop(process, stop)
        pub.close()
        sub.close()
        context.term()
    return CmdRtt(samples_us=samples_us, warmup=warmup, handshake_sends=sends, server=server)
