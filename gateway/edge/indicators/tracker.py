"""Indicators of what the lighting achieves: burning hours, switch counts, energy used and saved, per lamp group;
metered energy per feeder, robust to counter resets and gaps.

    indicators:
      interval: 15m                       # how often they are published (and kept in the state store)
      groups:
        street: {lamps: 12, watts: 56}    # a lighting target: how many lamps, each at full power
      feeders:
        f1: {device: feeder-meter, point: energy_import}   # a kWh counter

Per group, from the levels the lighting controller set (`LightingChanged`), integrated over
the clock's time: `burning_hours` (level above 0), `switch_ons`, `energy_kwh` (lamps x watts
x level, LED drivers drawing in proportion to their level), `full_power_kwh` (the same lamps
at 100 % for the same burning hours), and `saved_kwh` and `saved_percent`, the seed's
"energy saving effect". Per feeder, `metered_kwh`: the sum of the counter's increases; a
counter that goes down (a reset, a replaced meter) starts a new run from its new value; a
gap in the readings costs nothing but is not invented either.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from gateway.core.events import DeviceUpdate, EventBus
from gateway.edge.clock import Clock
from gateway.edge.indicators.settings import FeederMeter, GroupSize, IndicatorSettings
from gateway.edge.lighting.controller import LightingChanged

log = logging.getLogger("cityedge.indicators")


@dataclass(slots=True)
class Group:
    size: GroupSize
    level: float = 0.0
    since: datetime | None = None
    burning_s: float = 0.0
    switch_ons: int = 0
    energy_wh: float = 0.0

    def run_to(self, now: datetime) -> None:
        if self.since is not None and now > self.since:
            hours = (now - self.since).total_seconds() / 3600
            if self.level > 0:
                self.burning_s += hours * 3600
                self.energy_wh += self.size.lamps * self.size.watts * self.level / 100 * hours
        self.since = now

    def to_json(self) -> dict[str, Any]:
        full = self.size.lamps * self.size.watts * self.burning_s / 3600
        saved = full - self.energy_wh
        return {
            "burning_hours": round(self.burning_s / 3600, 4),
            "switch_ons": self.switch_ons,
            "energy_kwh": round(self.energy_wh / 1000, 4),
            "full_power_kwh": round(full / 1000, 4),
            "saved_kwh": round(saved / 1000, 4),
            "saved_percent": round(100 * saved / full, 2) if full else None,
        }


@dataclass(slots=True)
class Feeder:
    meter: FeederMeter
    last: float | None = None
    metered: float = 0.0
    resets: int = 0
    readings: int = 0

    def reading(self, value: float) -> None:
        self.readings += 1
        if self.last is not None:
            if value >= self.last:
                self.metered += value - self.last
            else:
                self.resets += 1  # a reset or a replaced meter: its new count starts a new run
        self.last = value

    def to_json(self) -> dict[str, Any]:
        return {"metered_kwh": round(self.metered, 4), "counter_resets": self.resets, "readings": self.readings}


@dataclass(slots=True)
class IndicatorsChanged:
    """Published on `<base>/indicators`, retained."""

    indicators: dict[str, Any] = field(default_factory=dict)


class Indicators:
    def __init__(self, settings: IndicatorSettings, bus: EventBus, clock: Clock) -> None:
        self.settings, self.bus, self.clock = settings, bus, clock
        self.groups = {name: Group(size) for name, size in settings.groups.items()}
        self.feeders = {name: Feeder(meter) for name, meter in settings.feeders.items()}
        self._undo: list[Any] = []

    def start(self) -> None:
        now = self.clock.now()
        for group in self.groups.values():
            group.since = now
        self._undo += [
            self.bus.subscribe(LightingChanged, self._on_level),
            self.bus.subscribe(DeviceUpdate, self._on_update),
        ]

    def stop(self) -> None:
        for undo in self._undo:
            undo()
        self._undo.clear()

    def _on_level(self, event: LightingChanged) -> None:
        group = self.groups.get(event.target)
        if group is None:
            return
        group.run_to(self.clock.now())
        if group.level <= 0 < event.level:
            group.switch_ons += 1
        group.level = event.level

    def _on_update(self, update: DeviceUpdate) -> None:
        for feeder in self.feeders.values():
            value = update.values.get(feeder.meter.point) if feeder.meter.device == update.device else None
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
                feeder.reading(float(value))

    def snapshot(self) -> dict[str, Any]:
        now = self.clock.now()
        for group in self.groups.values():
            group.run_to(now)
        return {
            "ts": now.isoformat(),
            "groups": {name: g.to_json() for name, g in self.groups.items()},
            "feeders": {name: f.to_json() for name, f in self.feeders.items()},
        }

    async def run(self) -> None:
        while True:
            await self.clock.sleep_until(self.clock.now() + timedelta(seconds=self.settings.interval))
            self.bus.publish(IndicatorsChanged(self.snapshot()))
