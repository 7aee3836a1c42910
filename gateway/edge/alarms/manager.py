"""Alarms with a lifecycle, decided in the cabinet: raised, acknowledged, cleared, shelved; kept across restarts.

A rule watches one point of one device (or the device's health):

    alarms:
      - {id: river-high, device: river-level, point: level, above: 2.5, hysteresis: 0.1, delay: 30s, severity: major}
      - {id: river-flood, device: river-level, point: level, above: 3.2, severity: critical}
      - {id: lamp-3-failed, device: lamps, point: ballast_3_lamp_failure, equals: true, severity: minor}
      - {id: meter-silent, device: feeder-meter, offline_for: 5m, severity: major}

- `above`/`below` with `hysteresis`: raised when the value passes the threshold, cleared
  only when it is back by more than the hysteresis, so a value wandering around the
  threshold does not flap; `delay`: the condition must hold that long first.
- `equals`: a status bit or state (true, a code).
- `offline_for`: the device has been offline that long.
- `day_burner: <target>`: the point (a lamp's level) is above 0 while the lighting target
  is at 0: a lamp burning in daylight.
- `during: [HH:MM, HH:MM]` (with `timezone`) limits any point rule to hours of the day: a
  flow above a threshold between 01:00 and 05:00, when no demand is expected, is a leak.
- `power: {target, watts, tolerance}`: the point (a lamp's power) is off the power the
  target's level calls for (watts x level) by more than the tolerance (a share of watts):
  a failing lamp draws too little, a failing driver too much.
- `supply_loss: {nominal: 230, share: 0.05}`: the point (a phase voltage) is below that
  share of nominal: the feeder lost its supply (EN 50160's interruption is below 5 %).

Lifecycle (after ISA-18.2): an alarm is *active* while its condition holds and
*acknowledged* once someone says so (by whom and when); it leaves the list when it is both
cleared and acknowledged. *Shelved* until a time, it is still tracked but not announced.
Every transition is a typed event on `<base>/event` (`alarm_raised`, `alarm_cleared`,
`alarm_acknowledged`, `alarm_shelved`); the list is published retained on `<base>/alarms`
and written to a file next to the outbox, so a restarted gateway starts with the alarms it
had, announces none of them again, and clears each when its condition is seen to be gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from gateway.core.commands import CommandError
from gateway.core.events import DeviceUpdate, EventBus, HealthChanged, Notable
from gateway.edge.alarms.rules import AlarmRule
from gateway.edge.clock import Clock
from gateway.edge.kept import keep
from gateway.edge.lighting.controller import LightingChanged

log = logging.getLogger("cityedge.alarms")


@dataclass(frozen=True, slots=True)
class AlarmRaised(Notable):
    kind: ClassVar[str] = "alarm_raised"
    alarm: str
    severity: str
    message: str
    device: str
    value: Any = None
    ts: str | None = None


@dataclass(frozen=True, slots=True)
class AlarmCleared(Notable):
    kind: ClassVar[str] = "alarm_cleared"
    alarm: str
    device: str
    value: Any = None
    ts: str | None = None


@dataclass(frozen=True, slots=True)
class AlarmAcknowledged(Notable):
    kind: ClassVar[str] = "alarm_acknowledged"
    alarm: str
    by: str
    ts: str | None = None


@dataclass(frozen=True, slots=True)
class AlarmShelved(Notable):
    kind: ClassVar[str] = "alarm_shelved"
    alarm: str
    by: str
    until: str
    ts: str | None = None


@dataclass(slots=True)
class AlarmsChanged:
    """The list changed: `<base>/alarms` is published again."""

    alarms: list[dict[str, Any]]


@dataclass(slots=True)
class Alarm:
    id: str
    severity: str
    message: str
    device: str
    active: bool = True
    raised: str = ""
    value: Any = None
    acked_by: str | None = None
    acked_at: str | None = None
    cleared: str | None = None
    shelved_until: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(slots=True)
class Watch:
    """What one rule is watching for: since when its condition has held (before the delay is up)."""

    rule: AlarmRule
    since: datetime | None = None
    offline_since: datetime | None = None
    last_value: Any = field(default=None)


class AlarmManager:
    def __init__(self, rules: list[AlarmRule], bus: EventBus, clock: Clock, path: Path | None = None) -> None:
        self.bus, self.clock, self.path = bus, clock, path
        self.watches = {rule.id: Watch(rule) for rule in rules}
        self.alarms: dict[str, Alarm] = {}
        self.levels: dict[str, float] = {}  # the lighting targets' levels in effect
        self.timer = asyncio.Event()  # set when a delay, an offline time or a shelving starts to run
        self._undo: list[Any] = []

    def start(self) -> None:
        self._restore()
        self._undo.append(self.bus.subscribe(DeviceUpdate, self._on_update))
        self._undo.append(self.bus.subscribe(HealthChanged, self._on_health))
        self._undo.append(self.bus.subscribe(LightingChanged, self._on_level))
        self._changed()

    def stop(self) -> None:
        for undo in self._undo:
            undo()
        self._undo.clear()

    # -- conditions --------------------------------------------------------------------------------

    def _on_update(self, update: DeviceUpdate) -> None:
        for watch in self.watches.values():
            rule = watch.rule
            if rule.device != update.device or rule.point is None or rule.point not in update.values:
                continue
            value = update.values[rule.point]
            watch.last_value = value
            holds = self._holds(rule, value, rule.id in self.alarms and self.alarms[rule.id].active, self.levels)
            if holds and not rule.in_window(self.clock.now()):
                holds = False  # outside its hours the condition is expected (water drawn by day)
            if holds is not None:
                self._condition(watch, holds, value)

    def _on_level(self, event: LightingChanged) -> None:
        self.levels[event.target] = event.level

    def _on_health(self, event: HealthChanged) -> None:
        for watch in self.watches.values():
            if watch.rule.device == event.device and watch.rule.offline_for is not None:
                if event.state == "offline":
                    if watch.offline_since is None:
                        watch.offline_since = self.clock.now()
                        self.timer.set()
                else:
                    watch.offline_since = None
                    self._condition(watch, False, event.state)

    def tick(self) -> None:
        """Delays and offline times run out with the clock: look again (the gateway calls this every second)."""
        now = self.clock.now()
        for watch in self.watches.values():
            rule = watch.rule
            if rule.offline_for is not None and watch.offline_since is not None:
                if now - watch.offline_since >= timedelta(seconds=rule.offline_for):
                    self._raise(watch, "offline")
            elif watch.since is not None and now - watch.since >= timedelta(seconds=rule.delay):
                self._raise(watch, watch.last_value)
            self._unshelve(rule.id, now)

    def next_due(self) -> datetime | None:
        """The earliest moment a delay, an offline time or a shelving runs out (None: nothing is running)."""
        due: list[datetime] = []
        for watch in self.watches.values():
            rule = watch.rule
            if rule.offline_for is not None and watch.offline_since is not None:
                due.append(watch.offline_since + timedelta(seconds=rule.offline_for))
            elif watch.since is not None:
                due.append(watch.since + timedelta(seconds=rule.delay))
        due += [datetime.fromisoformat(a.shelved_until) for a in self.alarms.values() if a.shelved_until]
        return min(due, default=None)

    @staticmethod
    def _holds(rule: AlarmRule, value: Any, active: bool, levels: dict[str, float]) -> bool | None:
        """Does the condition hold for this value (None: the value says nothing, e.g. a NaN or a text)?
        While the alarm is active the threshold moves back by the hysteresis."""
        if rule.equals is not None:
            return bool(value == rule.equals)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        if rule.day_burner is not None:
            level = levels.get(rule.day_burner)
            return None if level is None else level == 0 and value > 0
        if rule.power is not None:
            level = levels.get(rule.power.target)
            if level is None:
                return None
            expected = rule.power.watts * level / 100
            return abs(value - expected) > rule.power.tolerance * rule.power.watts
        band = rule.hysteresis if active else 0.0
        if rule.supply_loss is not None:
            return value < rule.supply_loss.threshold + band
        if rule.above is not None:
            return value > rule.above - band
        assert rule.below is not None
        return value < rule.below + band

    def _condition(self, watch: Watch, holds: bool, value: Any) -> None:
        rule = watch.rule
        if holds:
            if rule.id in self.alarms and self.alarms[rule.id].active:
                return
            if watch.since is None:
                watch.since = self.clock.now()
                self.timer.set()
            if rule.delay == 0:
                self._raise(watch, value)
            return
        watch.since = None
        alarm = self.alarms.get(rule.id)
        if alarm is not None and alarm.active:
            alarm.active, alarm.cleared, alarm.value = False, self._stamp(), value
            if not self._shelved(alarm):
                self.bus.publish(AlarmCleared(rule.id, rule.device, value, alarm.cleared))
            if alarm.acked_by is not None:
                del self.alarms[rule.id]
            self._changed()

    def _raise(self, watch: Watch, value: Any) -> None:
        rule = watch.rule
        watch.since = None
        current = self.alarms.get(rule.id)
        if current is not None and current.active:
            return
        stamp = self._stamp()
        alarm = Alarm(rule.id, rule.severity, rule.describe(), rule.device, True, stamp, value)
        if current is not None:  # cleared but not yet acknowledged, and back: active again, to be acknowledged anew
            alarm.shelved_until = current.shelved_until
        self.alarms[rule.id] = alarm
        if not self._shelved(alarm):
            self.bus.publish(AlarmRaised(rule.id, rule.severity, alarm.message, rule.device, value, stamp))
        self._changed()

    # -- operators -----------------------------------------------------------------------------------

    async def acknowledge(self, data: dict[str, Any]) -> dict[str, Any]:
        alarm = self._alarm(data)
        by = _who(data)
        alarm.acked_by, alarm.acked_at = by, self._stamp()
        self.bus.publish(AlarmAcknowledged(alarm.id, by, alarm.acked_at))
        if not alarm.active:
            del self.alarms[alarm.id]
        self._changed()
        return alarm.to_json()

    async def shelve(self, data: dict[str, Any]) -> dict[str, Any]:
        alarm = self._alarm(data)
        duration = data.get("duration")
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not 60 <= duration <= 7 * 86400:
            raise CommandError("out_of_range", "shelve for a duration of 60 to 604800 seconds")
        until = (self.clock.now() + timedelta(seconds=float(duration))).isoformat()
        alarm.shelved_until = until
        self.timer.set()
        self.bus.publish(AlarmShelved(alarm.id, _who(data), until, self._stamp()))
        self._changed()
        return alarm.to_json()

    async def listing(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        return self.list()

    def list(self) -> list[dict[str, Any]]:
        order = {"critical": 0, "major": 1, "minor": 2, "warning": 3}
        return [a.to_json() for a in sorted(self.alarms.values(), key=lambda a: (order[a.severity], a.raised))]

    def _alarm(self, data: dict[str, Any]) -> Alarm:
        alarm = self.alarms.get(str(data.get("alarm")))
        if alarm is None:
            raise CommandError("unknown_alarm", f"no alarm {str(data.get('alarm'))[:64]!r} in the list")
        return alarm

    def _shelved(self, alarm: Alarm) -> bool:
        return alarm.shelved_until is not None and datetime.fromisoformat(alarm.shelved_until) > self.clock.now()

    def _unshelve(self, alarm_id: str, now: datetime) -> None:
        alarm = self.alarms.get(alarm_id)
        if alarm is not None and alarm.shelved_until is not None and datetime.fromisoformat(alarm.shelved_until) <= now:
            alarm.shelved_until = None
            if alarm.active and alarm.acked_by is None:  # still there: announced now
                self.bus.publish(AlarmRaised(alarm.id, alarm.severity, alarm.message, alarm.device, alarm.value,
                                             self._stamp()))  # fmt: skip
            self._changed()

    def _stamp(self) -> str:
        return self.clock.now().isoformat()

    # -- the list, published and kept ----------------------------------------------------------------

    def _changed(self) -> None:
        listing = self.list()
        self.bus.publish(AlarmsChanged(listing))
        if self.path is not None:
            keep(self.path, listing, "the alarm list")

    def _restore(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text()[:1_000_000])
        except (OSError, ValueError) as exc:
            log.warning("the kept alarm list %s is unreadable (%s): starting without it", self.path, exc)
            return
        for entry in data if isinstance(data, list) else []:
            with contextlib.suppress(TypeError, KeyError, ValueError):
                if isinstance(entry, dict) and entry.get("id") in self.watches:
                    fields = {k: entry[k] for k in Alarm.__dataclass_fields__ if k in entry}
                    alarm = Alarm(**fields)
                    if alarm.severity in ("critical", "major", "minor", "warning"):
                        self.alarms[alarm.id] = alarm


def _who(data: dict[str, Any]) -> str:
    by = data.get("by")
    if not isinstance(by, str) or not by.strip() or len(by) > 64:
        raise CommandError("bad_value", "say who: 'by' is a name of 1 to 64 characters")
    return by.strip()
