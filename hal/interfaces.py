"""Device interfaces: what a backend (sim, NVML, hwmon, replay) must provide.

A device reads its sensors into a flat telemetry dict and executes commands by opcode. Backends
are chosen by the wiring for a use case (SIL, HIL, flight); flight code never sees them, only
their bus services.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

CommandHandler = Callable[[dict[str, Any]], None]


class CommandRejected(Exception):
    """A command could not be executed; status is a terminal response code."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


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


def require_number(args: dict[str, Any], key: str, lo: float, hi: float) -> float:
    """Validate one numeric argument, naming it and its valid range on rejection."""
    if key not in args:
        raise CommandRejected("FORMAT_ERROR", f"missing argument {key!r}")
    value = args[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CommandRejected("FORMAT_ERROR", f"argument {key!r} must be a number, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise CommandRejected("VALIDATION_ERROR", f"argument {key!r}={value!r} out of range [{lo:g}, {hi:g}]")
    return float(value)
