"""Device interfaces: what a backend (sim, NVML, hwmon, replay) must provide.

A device reads its sensors into a flat telemetry dict and executes commands by opcode. Backends
are chosen by the wiring for a use case (SIL, HIL, flight); flight code never sees them, only
their bus services.
"""

from __future__ import annotations

from typing import Any, Protocol

# Commands are validated and answered by flight.command_server; devices only supply handlers.
from flight.command_server import CommandHandler, CommandRejected, require_number  # noqa: E402,F401


class Device(Protocol):
    name: str

    def read(self) -> dict[str, Any]:
        """Sample every sensor of the device: a flat dict of numbers, booleans and strings."""

    def command_handlers(self) -> dict[str, CommandHandler]:
        """Opcode -> handler taking the validated argument dict; a handler raises CommandRejected."""


class GpuDevice(Device, Protocol):
    """A GPU with a power cap (NVML-style, in watts here) and a thermal margin."""


class EpsDevice(Device, Protocol):
    """Electrical power system: arrays, battery, bus loads and load switches."""


class ThermalSensors(Device, Protocol):
    """Temperature sensors of the payload thermal path."""


class NavReceiver(Device, Protocol):
    """Position and the predicted eclipse schedule (a GNSS receiver plus onboard propagator)."""
