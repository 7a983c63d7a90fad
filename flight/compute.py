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
