"""Events: discrete, severity-tagged records published on ``evt.<source>``.

Severities follow F Prime's seven levels, so the ground tools can filter the way operators expect.
Every event is declared in the dictionary (flight/dictionary/<source>.toml) with its severity and
throttle: emitting an undeclared event, or with another severity, is a programming error raised
here. A throttled event goes out at most ``throttle`` times; the rest are counted in
``suppressed`` (and reported with the next one let through after ``reset_throttles``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flight.bus import Bus

if TYPE_CHECKING:
    from flight.dictionary import Dictionary

SEVERITIES = ("FATAL", "WARNING_HI", "WARNING_LO", "COMMAND", "ACTIVITY_HI", "ACTIVITY_LO", "DIAGNOSTIC")


class EventReporter:
    def __init__(self, bus: Bus, source: str, dictionary: Dictionary | None = None) -> None:
        from flight.dictionary import default_dictionary

        dictionary = dictionary if dictionary is not None else default_dictionary()
        self._pub = bus.publisher(source)
        self._topic = f"evt.{source}"
        self.source = source
        self._declared = {e.name: e for e in dictionary.events.values() if e.component == source}
        self.counts: dict[str, int] = {}
        self.suppressed: dict[str, int] = {}

    def emit(self, severity: str, name: str, text: str, **fields) -> bool:
        """Publish the event; False when its throttle suppressed it (it is still counted)."""
        declared = self._declared.get(name)
        if declared is None:
            raise ValueError(f"event {self.source}.{name} is not declared in the dictionary")
        if severity != declared.severity:
            raise ValueError(f"event {self.source}.{name} is declared {declared.severity}, emitted {severity}")
        count = self.counts.get(name, 0) + 1
        self.counts[name] = count
        if declared.throttle and count > declared.throttle:
            self.suppressed[name] = self.suppressed.get(name, 0) + 1
            return False
        self._pub.publish(self._topic, {"severity": severity, "name": name, "text": text, **fields})
        return True

    def reset_throttles(self) -> None:
        """Let throttled events through again (a RESET_COUNTERS of the owning component)."""
        self.counts.clear()
        self.suppressed.clear()
