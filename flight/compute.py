"""What a payload job needs from the device it computes on.

The job does not know whether the device is a simulated GPU (SIL), a real one (HIL, flight) or a
replay: the wiring hands it an object with this interface.
"""

from __future__ import annotations

from typing import Protocol


class ComputeDevice(Protocol):
    def ready(self) -> bool:
        """Powered, booted and able to take work; device memory is lost whenever this goes False."""

    def set_busy(self, busy: bool) -> None:
        """Start or stop feeding the device work."""

    def take_work_ref_s(self) -> float:
        """Work done since the last call, in reference seconds (seconds at full-TDP throughput)."""


class SharedCompute:
    """One compute device shared by several payload jobs.

    Each frame, ``collect`` (a rate-group member that runs before the jobs) moves the work the
    device did into a pool; jobs then take from the pool in the order they run (inference before
    training), each up to what it was granted. Work nobody takes is counted as unused. The device
    is busy while any job asks it to be.
    """

    def __init__(self, device: ComputeDevice) -> None:
        self.device = device
        self._pool_ref_s = 0.0
        self._busy: dict[str, bool] = {}
        self.unused_work_ref_s = 0.0

    def collect(self, ctx=None) -> None:
        self.unused_work_ref_s += self._pool_ref_s
        self._pool_ref_s = self.device.take_work_ref_s()

    def handle(self, job: str) -> "ComputeHandle":
        self._busy[job] = False
        return ComputeHandle(self, job)

    def _take(self, limit_ref_s: float) -> float:
        taken = min(self._pool_ref_s, max(limit_ref_s, 0.0))
        self._pool_ref_s -= taken
        return taken

    def _set_busy(self, job: str, busy: bool) -> None:
        self._busy[job] = busy
        self.device.set_busy(any(self._busy.values()))


class ComputeHandle:
    """A job's view of a SharedCompute: the ComputeDevice protocol, plus a limit on what it takes."""

    def __init__(self, shared: SharedCompute, job: str) -> None:
        self._shared = shared
        self.job = job
        self.limit_ref_s = float("inf")

    def ready(self) -> bool:
        return self._shared.device.ready()

    def set_busy(self, busy: bool) -> None:
        self._shared._set_busy(self.job, busy)

    def take_work_ref_s(self) -> float:
        return self._shared._take(self.limit_ref_s)
