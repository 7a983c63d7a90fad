"""Events: discrete, severity-tagged records published on ``evt.<source>``.

Severities follow F Prime's seven levels, so the ground tools can filter the way operators expect.
"""

from __future__ import annotations

from flight.bus import Bus

SEVERITIES = ("FATAL", "WARNING_HI", "WARNING_LO", "COMMAND", "ACTIVITY_HI", "ACTIVITY_LO", "DIAGNOSTIC")


class EventReporter:
    def __init__(self, bus: Bus, source: str) -> None:
        self._pub = bus.publisher(source)
        self._topic = f"evt.{source}"
        self.counts: dict[str, int] = {}

    def emit(self, severity: str, name: str, text: str, **fields) -> None:
        if severity not in SEVERITIES:
            raise ValueError(f"unknown event severity {severity!r} (one of {', '.join(SEVERITIES)})")
        self.counts[name] = self.counts.get(name, 0) + 1
        self._pub.publish(self._topic, {"severity": severity, "name": name, "text": text, **fields})
