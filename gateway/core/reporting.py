"""When a device's state is worth publishing: on change (with deadbands), periodically, or both.

Every published state carries all values of the cycle, so a consumer never needs the
previous message; the strategy only decides whether this cycle is published.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.config.model import ReportSettings
from gateway.points.types import Value


class Reporter:
    def __init__(self, settings: ReportSettings) -> None:
        self.mode = settings.mode
        self.max_silence = settings.max_silence
        self.default = (settings.deadband, settings.deadband_pct)
        self.per_point = {name: (p.deadband, p.deadband_pct) for name, p in settings.points.items()}
        self.last_values: dict[str, Value] = {}
        self.last_errors: dict[str, str] = {}
        self.last_sent = float("-inf")

    def due(self, values: Mapping[str, Value], errors: Mapping[str, str], now: float) -> bool:
        """Should this cycle be published? Remembers what was sent when it says yes."""
        if (
            self.mode == "periodic"
            or self._changed(values, errors)
            or (self.mode == "change_or_silence" and now - self.last_sent >= self.max_silence)
        ):
            self.last_values = dict(values)
            self.last_errors = dict(errors)
            self.last_sent = now
            return True
        return False

    def _changed(self, values: Mapping[str, Value], errors: Mapping[str, Any]) -> bool:
        if errors != self.last_errors or values.keys() != self.last_values.keys():
            return True
        last = self.last_values
        for name, value in values.items():
            old = last[name]
            if value == old:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or isinstance(old, bool)
                or not isinstance(old, int | float)
            ):
                return True
            absolute, percent = self.per_point.get(name, self.default)
            delta = abs(value - old)
            if delta > absolute and (percent == 0 or delta > abs(old) * percent / 100):
                return True
        return False
