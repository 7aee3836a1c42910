"""Indicators of what the lighting and the site achieve: per lamp group burning hours, switch counts, energy used
and saved, lamp availability and failures per month; metered energy per feeder, robust to counter resets and gaps;
time spent above warning levels per water point. Kept across restarts.

    indicators:
      interval: 15m                       # how often they are published (and kept in the state store)
      timezone: Europe/Madrid             # months are counted in it (default: the lighting site's)
      groups:
        street:                           # a lighting target: how many lamps, each at full power
          lamps: 12
          watts: 56
          failures: {device: lamps, points: "ballast_*_lamp_failure"}
      feeders:
        f1: {device: feeder-meter, point: energy_import}   # a kWh counter
      levels:
        river: {device: river-level, point: level, warnings: {high: 2.5, flood: 3.2}}

Per group, from the levels the lighting controller set (`LightingChanged`), integrated over
the clock's time: `burning_hours` (level above 0), `switch_ons`, `energy_kwh` (lamps x watts
x level, LED drivers drawing in proportion to their level), `full_power_kwh` (the same lamps
at 100 % for the same burning hours), and `saved_kwh` and `saved_percent`, the seed's
"energy saving effect". With `failures`: `lamps_failed` now, `availability_percent` (the
share of lamp-hours, while the group burns, that a lamp was working: a lamp failed for half
of the night in a group of ten costs 5 %) and `failures_per_month` (a failure bit turning
true, counted in the month it did, the last twelve months).

Per feeder, `metered_kwh`: the sum of the counter's increases; a counter that goes down (a
reset, a replaced meter) starts a new run from its new value; a gap in the readings costs
nothing but is not invented either.

Per level, `hours_above` each warning level and `exceedances` (how often it went above):
the time between two readings counts for the first reading's side; readings further apart
than `max_gap` (a device offline) leave the time between them uncounted.

Everything is written to `indicators.json` next to the outbox at every publication and at
stop, and read back at start: a restart or a power cut costs at most one interval.
"""

from __future__ import annotations

import fnmatch
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.core.events import DeviceUpdate, EventBus
from gateway.edge.clock import Clock
from gateway.edge.indicators.settings import FeederMeter, GroupSize, IndicatorSettings, LevelWatch
from gateway.edge.kept import keep
from gateway.edge.lighting.controller import LightingChanged

log = logging.getLogger("cityedge.indicators")
MONTHS_KEPT = 12
Count = Annotated[float, Field(ge=0, le=1e15)]


def _number(value: Any) -> float | None:
    """A reading that says something: a finite number, not a boolean or a text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


@dataclass(slots=True)
class Group:
    size: GroupSize
    level: float = 0.0
    since: datetime | None = None
    burning_s: float = 0.0
    switch_ons: int = 0
    energy_wh: float = 0.0
    lamp_s: float = 0.0  # lamp-seconds while burning
    working_s: float = 0.0  # of which a lamp was working
    failed: set[str] = field(default_factory=set)
    failures: dict[str, int] = field(default_factory=dict)  # "2026-12": failures that month

    def run_to(self, now: datetime) -> None:
        if self.since is not None and now > self.since:
            seconds = (now - self.since).total_seconds()
            if self.level > 0:
                lamps = self.size.lamps
                self.burning_s += seconds
                self.energy_wh += lamps * self.size.watts * self.level / 100 * seconds / 3600
                self.lamp_s += lamps * seconds
                self.working_s += max(0, lamps - len(self.failed)) * seconds
        self.since = now

    def failure(self, point: str, failed: bool, month: str) -> None:
        if failed and point not in self.failed:
            self.failed.add(point)
            self.failures[month] = self.failures.get(month, 0) + 1
            for old in sorted(self.failures)[:-MONTHS_KEPT]:
                del self.failures[old]
        elif not failed:
            self.failed.discard(point)

    def to_json(self) -> dict[str, Any]:
        full = self.size.lamps * self.size.watts * self.burning_s / 3600
        saved = full - self.energy_wh
        out: dict[str, Any] = {
            "burning_hours": round(self.burning_s / 3600, 4),
            "switch_ons": self.switch_ons,
            "energy_kwh": round(self.energy_wh / 1000, 4),
            "full_power_kwh": round(full / 1000, 4),
            "saved_kwh": round(saved / 1000, 4),
            "saved_percent": round(100 * saved / full, 2) if full else None,
        }
        if self.size.failures is not None:
            out["lamps_failed"] = len(self.failed)
            out["availability_percent"] = round(100 * self.working_s / self.lamp_s, 2) if self.lamp_s else None
            out["failures_per_month"] = dict(sorted(self.failures.items()))
        return out


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
class Level:
    watch: LevelWatch
    last: tuple[datetime, float] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    exceedances: dict[str, int] = field(default_factory=dict)
    above: set[str] = field(default_factory=set)
    peak: float | None = None

    def reading(self, now: datetime, value: float) -> None:
        if self.last is not None:
            then, before = self.last
            gap = (now - then).total_seconds()
            if 0 < gap <= self.watch.max_gap:
                for name, threshold in self.watch.warnings.items():
                    if before > threshold:
                        self.seconds[name] = self.seconds.get(name, 0.0) + gap
        for name, threshold in self.watch.warnings.items():
            if value > threshold and name not in self.above:
                self.above.add(name)
                self.exceedances[name] = self.exceedances.get(name, 0) + 1
            elif value <= threshold:
                self.above.discard(name)
        self.peak = value if self.peak is None else max(self.peak, value)
        self.last = (now, value)

    def to_json(self) -> dict[str, Any]:
        names = list(self.watch.warnings)
        return {
            "hours_above": {n: round(self.seconds.get(n, 0.0) / 3600, 4) for n in names},
            "exceedances": {n: self.exceedances.get(n, 0) for n in names},
            "above": [n for n in names if n in self.above],
            "peak": self.peak,
        }


class _KeptGroup(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    burning_s: Count = 0.0
    switch_ons: Annotated[int, Field(ge=0)] = 0
    energy_wh: Count = 0.0
    lamp_s: Count = 0.0
    working_s: Count = 0.0
    failed: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=10000)
    failures: dict[Annotated[str, Field(pattern=r"^\d{4}-\d{2}$")], Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict
    )


class _KeptFeeder(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    last: Count | None = None
    metered: Count = 0.0
    resets: Annotated[int, Field(ge=0)] = 0
    readings: Annotated[int, Field(ge=0)] = 0


class _KeptLevel(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    seconds: dict[str, Count] = Field(default_factory=dict)
    exceedances: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    above: list[str] = Field(default_factory=list)
    peak: float | None = None


class _Kept(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    groups: dict[str, _KeptGroup] = Field(default_factory=dict)
    feeders: dict[str, _KeptFeeder] = Field(default_factory=dict)
    levels: dict[str, _KeptLevel] = Field(default_factory=dict)


@dataclass(slots=True)
class IndicatorsChanged:
    """Published on `<base>/indicators`, retained."""

    indicators: dict[str, Any] = field(default_factory=dict)


class Indicators:
    def __init__(
        self,
        settings: IndicatorSettings,
        bus: EventBus,
        clock: Clock,
        path: Path | None = None,
        timezone: str = "UTC",
    ) -> None:
        self.settings, self.bus, self.clock, self.path = settings, bus, clock, path
        self.zone = ZoneInfo(settings.timezone or timezone)
        self.groups = {name: Group(size) for name, size in settings.groups.items()}
        self.feeders = {name: Feeder(meter) for name, meter in settings.feeders.items()}
        self.levels = {name: Level(watch) for name, watch in settings.levels.items()}
        self._undo: list[Any] = []

    def start(self) -> None:
        self._restore()
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
        self.keep()

    def _on_level(self, event: LightingChanged) -> None:
        group = self.groups.get(event.target)
        if group is None:
            return
        group.run_to(self.clock.now())
        if group.level <= 0 < event.level:
            group.switch_ons += 1
        group.level = event.level

    def _on_update(self, update: DeviceUpdate) -> None:
        now = self.clock.now()
        for feeder in self.feeders.values():
            if feeder.meter.device == update.device:
                count = _number(update.values.get(feeder.meter.point))
                if count is not None and count >= 0:
                    feeder.reading(count)
        for level in self.levels.values():
            if level.watch.device == update.device:
                value = _number(update.values.get(level.watch.point))
                if value is not None:
                    level.reading(now, value)
        for group in self.groups.values():
            failures = group.size.failures
            if failures is None or failures.device != update.device:
                continue
            seen = [(p, v) for p, v in update.values.items() if fnmatch.fnmatchcase(p, failures.points)]
            if seen:
                group.run_to(now)  # the time so far counts with the lamps as they were
                month = now.astimezone(self.zone).strftime("%Y-%m")
                for point, bit in seen:
                    if isinstance(bit, bool):
                        group.failure(point, bit, month)

    def snapshot(self) -> dict[str, Any]:
        now = self.clock.now()
        for group in self.groups.values():
            group.run_to(now)
        out: dict[str, Any] = {
            "ts": now.isoformat(),
            "groups": {name: g.to_json() for name, g in self.groups.items()},
            "feeders": {name: f.to_json() for name, f in self.feeders.items()},
        }
        if self.levels:
            out["levels"] = {name: level.to_json() for name, level in self.levels.items()}
        return out

    async def run(self) -> None:
        while True:
            await self.clock.sleep_until(self.clock.now() + timedelta(seconds=self.settings.interval))
            self.bus.publish(IndicatorsChanged(self.snapshot()))
            self.keep()

    # -- kept across restarts ------------------------------------------------------------------------

    def keep(self) -> None:
        if self.path is None:
            return
        for group in self.groups.values():
            group.run_to(self.clock.now())
        group_fields = ("burning_s", "switch_ons", "energy_wh", "lamp_s", "working_s", "failures")
        kept = {
            "groups": {
                name: {**{k: getattr(g, k) for k in group_fields}, "failed": sorted(g.failed)}
                for name, g in self.groups.items()
            },
            "feeders": {
                name: {k: getattr(f, k) for k in ("last", "metered", "resets", "readings")}
                for name, f in self.feeders.items()
            },
            "levels": {
                name: {"seconds": lv.seconds, "exceedances": lv.exceedances, "above": sorted(lv.above), "peak": lv.peak}
                for name, lv in self.levels.items()
            },
        }
        keep(self.path, kept, "the indicators")

    def _restore(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            kept = _Kept.model_validate_json(self.path.read_text()[:5_000_000])
        except (OSError, ValueError, ValidationError) as exc:
            log.warning("the kept indicators %s are unreadable (%s): counting from zero", self.path, str(exc)[:200])
            return
        for name, g in kept.groups.items():
            if (group := self.groups.get(name)) is not None:
                group.burning_s, group.switch_ons, group.energy_wh = g.burning_s, g.switch_ons, g.energy_wh
                group.lamp_s, group.working_s = g.lamp_s, min(g.working_s, g.lamp_s)
                group.failed, group.failures = set(g.failed), dict(g.failures)
        for name, f in kept.feeders.items():
            if (feeder := self.feeders.get(name)) is not None:
                feeder.last, feeder.metered, feeder.resets, feeder.readings = f.last, f.metered, f.resets, f.readings
        for name, lv in kept.levels.items():
            if (level := self.levels.get(name)) is not None:
                known = level.watch.warnings
                level.seconds = {k: v for k, v in lv.seconds.items() if k in known}
                level.exceedances = {k: v for k, v in lv.exceedances.items() if k in known}
                level.above = {k for k in lv.above if k in known}
                level.peak = lv.peak if lv.peak is None or math.isfinite(lv.peak) else None
