"""Bus throughput: Sunlit's bus API against raw pyzmq PUB/SUB + msgpack, interleaved.

Both sides move the same ~200-byte telemetry frame (topic, NUL, msgpack([seq, t_ns, source,
body])) over the same transport (inproc, one PUB, one SUB, same high-water marks) in the same
process. One round publishes ``batch`` messages and then drains them all; rounds alternate
between the two sides so that whatever else the machine is doing hits both, and each side's
rate is the median over its rounds.

The raw side is what a minimal hand-written client does: pack and send; receive until empty,
split the topic and unpack. It has none of the bus's guarantees (topic validation, per-stream
sequence accounting, malformed-frame counting, typed messages); the ratio is their price.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq

from flight.bus import Bus, backend_send
from flight.clock import SteppedClock

TOPIC = "tlm.eps"
SOURCE = "eps"
T0_NS = 86_400 * 1_000_000_000  # a day into the mission: a realistic timestamp size


def sample_body() -> dict[str, Any]:
    """An EPS-like telemetry body; with the header its frame is about 200 bytes."""
    return {
        "solar_power_w": 1139.7254,
        "battery_soc": 0.8731,
        "battery_capacity_wh": 600.0,
        "battery_power_w": 212.5,
        "bus_load_w": 150.2,
        "gpu_rail_power_w": 699.6,
        "switch_gpu": True,
        "cmd_accepted": 12,
        "cmd_rejected": 0,
    }


@dataclass
class BusRates:
    sunlit_msgs_per_s: float
    raw_msgs_per_s: float
    frame_bytes: int
    rounds: int
    batch: int
    dropped: int  # by the Sunlit subscription: must be 0 (the batch fits its queue)

    @property
    def ratio(self) -> float:
        return self.sunlit_msgs_per_s / self.raw_msgs_per_s


class _SunlitSide:
    def __init__(self, context: zmq.Context, hwm: int) -> None:
        self.clock = SteppedClock(start_ns=T0_NS)
        self.bus = Bus(self.clock.now_ns, context=context, name="bench")
        self.publisher = self.bus.publisher(SOURCE)
        self.subscription = self.bus.subscribe([TOPIC], hwm=hwm, name="bench")
        self.bus.settle()

    def round(self, body: dict, batch: int) -> int:
        publish = self.publisher.publish
        for _ in range(batch):
            publish(TOPIC, body)
        return len(self.subscription.drain())

    def close(self) -> None:
        self.bus.close()


class _RawSide:
    """Same socket options as the bus's inproc path (SNDHWM 1 at bind, RCVHWM = capacity)."""

    def __init__(self, context: zmq.Context, hwm: int) -> None:
        self.clock = SteppedClock(start_ns=T0_NS)
        self.pub = context.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 1)
        endpoint = f"inproc://bench-raw-{id(self)}"
        self.pub.bind(endpoint)
        self.sub = context.socket(zmq.SUB)
        self.sub.setsockopt(zmq.RCVHWM, hwm)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, TOPIC.encode() + b"\x00")
        self.sub.connect(endpoint)
        self.prefix = TOPIC.encode() + b"\x00"
        self.seq = 0
        # inproc connects synchronously, but let the PUB take in the subscription first.
        self.pub.getsockopt(zmq.EVENTS)

    def round(self, body: dict, batch: int) -> int:
        # The same pyzmq entry point the bus's publishers use (its backend send): the ratio prices
        # the bus's guarantees, not a faster call into pyzmq.
        send, prefix, now_ns = backend_send(self.pub), self.prefix, self.clock.now_ns
        pack = msgpack.Packer(use_bin_type=True).pack
        seq = self.seq
        for _ in range(batch):
            send(prefix + pack([seq, now_ns(), SOURCE, body]))
            seq += 1
        self.seq = seq
        recv, again, unpackb = self.sub.recv, zmq.Again, msgpack.unpackb
        got = []
        while True:
            try:
                frame = recv(zmq.NOBLOCK)
            except again:
                break
            cut = frame.find(b"\x00")
            got.append((frame[:cut], unpackb(frame[cut + 1 :])))
        # As the bus does after a read: let the PUB see that the queue has room again now,
        # not when its ~1 ms command throttle next allows (else the next burst overflows).
        self.pub.getsockopt(zmq.EVENTS)
        return len(got)

    def close(self) -> None:
        self.sub.close(linger=0)
        self.pub.close(linger=0)


def measure_bus(messages: int = 200_000, batch: int = 2_000) -> BusRates:
    """Alternate rounds of ``batch`` messages until each side has moved ``messages``."""
    batch = min(batch, messages)
    rounds = max(3, messages // batch)
    # ZeroMQ's reader acknowledges reads to the writer in chunks of half the high-water mark,
    # so right after a drain the writer may still count up to hwm/2 frames as queued: give
    # both sides room for two batches.
    hwm = 2 * batch + 16
    body = sample_body()
    context = zmq.Context()
    sunlit, raw = _SunlitSide(context, hwm), _RawSide(context, hwm)
    try:
        frame_bytes = len(TOPIC) + 1 + len(msgpack.packb([rounds * batch, T0_NS, SOURCE, body], use_bin_type=True))
        for side in (sunlit, raw):  # warm-up: first-of-stream paths, caches, allocator
            side.round(body, batch)
        sunlit_rates, raw_rates = [], []
        for i in range(rounds):
            order = (sunlit, raw) if i % 2 == 0 else (raw, sunlit)
            for side in order:
                t0 = time.perf_counter()
                got = side.round(body, batch)
                dt = time.perf_counter() - t0
                if got != batch:
                    raise RuntimeError(f"bus bench lost messages: {got} of {batch} arrived")
                (sunlit_rates if side is sunlit else raw_rates).append(batch / dt)
        dropped = sunlit.subscription.dropped_total
    finally:
        sunlit.close()
        raw.close()
        context.term()
    return BusRates(
        sunlit_msgs_per_s=statistics.median(sunlit_rates),
        raw_msgs_per_s=statistics.median(raw_rates),
        frame_bytes=frame_bytes, rounds=rounds, batch=batch, dropped=dropped,
    )
