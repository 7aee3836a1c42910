"""Lighting control at the edge: programs, photocells, motion and overrides, acted out through the command service.

For each target (a DALI group, the broadcast level, a single ballast, any writable point)
the controller works out the level the moment calls for, and why:

1. the program the calendar selects, at its switch point in force (`program.py`);
2. a photocell, where one is configured: daylight (illuminance above `off_above`, until it
   falls below `on_below`: hysteresis) keeps the lamps off whatever the program says;
3. motion, where configured: a presence reading raises the lamps to `level` for `hold`
   after the last one, combined with the program's level by `max`, `min` or `set`;
4. an override from an operator, until it expires: it wins over all of the above.

A change is sent as a command (validated and audited like an operator's, `sender.via:
lighting`); targets on one feeder are staggered so they do not all switch at once. The
state of each target (level wanted, level in effect with its reason, the level read back)
is a `LightingChanged` event, published retained on `<base>/lighting/<target>`. The clock
is injected: nothing here reads the system time, so a test runs a night in seconds. The
broker plays no part: with the uplink down the lamps switch as they would with it up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from gateway.core.commands import Command, CommandError, CommandService
from gateway.core.events import DeviceUpdate, EventBus
from gateway.core.state import StateStore
from gateway.core.supervision import Supervisor
from gateway.edge.clock import Clock, sleep_or_wake
from gateway.edge.lighting.program import Event, in_force
from gateway.edge.lighting.settings import LightingSettings, Target

log = logging.getLogger("cityedge.lighting")
TICK = 60.0  # seconds: the longest the controller sleeps without looking again


@dataclass(frozen=True, slots=True)
class LightingChanged:
    """A target's lighting state changed: published retained on `<base>/lighting/<target>`."""

    target: str
    level: float  # in effect
    reason: str  # program | sensor | override
    program: str | None = None
    detail: str | None = None  # the switch point, the sensor, who overrode
    target_level: float | None = None  # what the program alone says
    actual: float | None = None  # read back from the device, where it can be
    ts: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if getattr(self, k) is not None}


@dataclass(slots=True)
class Override:
    level: float
    until: datetime
    by: str


@dataclass(slots=True)
class TargetState:
    target: Target
    level: float | None = None  # last level sent
    dark: bool | None = None
    motion_until: datetime | None = None
    override: Override | None = None
    last: LightingChanged | None = None


@dataclass(slots=True)
class Decision:
    level: float
    reason: str
    detail: str
    program: str | None
    program_level: float
    ramp: float = 0.0
    upcoming: list[datetime] = field(default_factory=list)


class LightingController:
    def __init__(
        self,
        settings: LightingSettings,
        bus: EventBus,
        store: StateStore,
        commands: CommandService,
        clock: Clock,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.settings, self.bus, self.store, self.commands, self.clock = settings, bus, store, commands, clock
        self.supervisor = supervisor or Supervisor()
        self.targets = {t.id: TargetState(t) for t in settings.targets}
        self._wake = asyncio.Event()
        self._undo: list[Any] = []
        self.sent = 0  # commands sent
        self.refused: deque[str] = deque(maxlen=50)  # the latest commands the command service refused, with why

    # -- life cycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._undo.append(self.bus.subscribe(DeviceUpdate, self._on_update))
        self.supervisor.spawn("lighting", self._run)

    async def stop(self) -> None:
        for undo in self._undo:
            undo()
        self._undo.clear()
        await self.supervisor.cancel("lighting")

    # -- inputs --------------------------------------------------------------------------------------

    def _on_update(self, update: DeviceUpdate) -> None:
        now = self.clock.now()
        for state in self.targets.values():
            target = state.target
            cell, motion = target.photocell, target.motion
            if cell is not None and cell.device == update.device and cell.point in update.values:
                lux = update.values[cell.point]
                if isinstance(lux, (int, float)) and not isinstance(lux, bool):
                    before = state.dark
                    if lux <= cell.on_below:
                        state.dark = True
                    elif lux >= cell.off_above:
                        state.dark = False
                    if state.dark != before:  # a reading inside the band, or on the same side, changes nothing
                        self._wake.set()
            if motion is not None and motion.device == update.device and motion.point in update.values:
                seen = update.values[motion.point]
                if seen is True or (isinstance(seen, (int, float)) and not isinstance(seen, bool) and seen > 0):
                    if state.motion_until is None or state.motion_until <= now:
                        self._wake.set()  # motion begins; while it goes on, the hold is only extended
                    state.motion_until = now + timedelta(seconds=motion.hold)

    async def override(self, data: dict[str, Any], by: str = "mqtt") -> dict[str, Any]:
        """`{target, level, duration?|until?}` sets an override; `{target, clear: true}` ends it."""
        state = self.targets.get(str(data.get("target")))
        if state is None:
            raise CommandError(
                "unknown_target", f"no lighting target {data.get('target')!r} ({', '.join(self.targets)})"
            )
        if data.get("clear") is True:
            state.override = None
        else:
            level = data.get("level")
            if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 <= level <= 100:
                raise CommandError("out_of_range", "an override's level is a number from 0 to 100")
            now = self.clock.now()
            until = self._until(data, now)
            state.override = Override(float(level), until, str(data.get("by") or by)[:64])
        self._wake.set()
        decision = self.decide(state, self.clock.now())  # what the loop, woken, is about to apply
        return {
            "target": state.target.id,
            "level": decision.level,
            "reason": decision.reason,
            "detail": decision.detail,
            "target_level": decision.program_level,
        }

    def _until(self, data: dict[str, Any], now: datetime) -> datetime:
        if "until" in data:
            try:
                until = datetime.fromisoformat(str(data["until"]))
            except ValueError:
                raise CommandError("bad_value", "until is an ISO 8601 time with its offset") from None
            if until.tzinfo is None:
                raise CommandError("bad_value", "until needs its UTC offset (2026-06-28T06:00+02:00)")
            if until <= now or until > now + timedelta(days=7):
                raise CommandError("out_of_range", "until is in the next seven days")
            return until
        duration = data.get("duration", self.settings.override_for)
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not 1 <= duration <= 7 * 86400:
            raise CommandError("out_of_range", "duration is 1 to 604800 seconds")
        return now + timedelta(seconds=float(duration))

    def status(self) -> dict[str, Any]:
        return {t: (s.last.to_json() if s.last else {"target": t}) for t, s in self.targets.items()}

    # -- deciding ----------------------------------------------------------------------------------

    def decide(
        self, state: TargetState, now: datetime, program: tuple[Event | None, Event | None] | None = None
    ) -> Decision:
        """The level for `state`'s target at `now` and why; `program`: the switch points in force and next, when
        already worked out for this moment (every target runs the same calendar)."""
        s = self.settings
        last, upcoming = program or in_force(s.site, s.calendar, s.programs, now)
        base = last.level if last else 0.0
        decision = Decision(
            base, "program", _said(last), last.program if last else None, base, last.ramp if last else 0.0
        )
        if upcoming is not None:
            decision.upcoming.append(upcoming.when)
        target = state.target
        if target.photocell is not None and state.dark is False and base > 0:
            decision.level, decision.reason, decision.detail = 0.0, "sensor", f"daylight at {target.photocell.device}"
        if target.motion is not None and state.motion_until is not None:
            if state.motion_until > now:
                motion = target.motion
                raised = {"max": max(decision.level, motion.level), "min": min(decision.level, motion.level)}
                decision.level = raised.get(motion.combine, motion.level)
                decision.reason, decision.detail = "sensor", f"motion at {motion.device}"
                decision.upcoming.append(state.motion_until)
            else:
                state.motion_until = None
        if state.override is not None:
            if state.override.until > now:
                decision.level, decision.reason = state.override.level, "override"
                decision.detail = f"{state.override.by} until {state.override.until.isoformat()}"
                decision.upcoming.append(state.override.until)
            else:
                state.override = None
        return decision

    async def _run(self) -> None:
        while True:
            now = self.clock.now()
            wake = now + timedelta(seconds=TICK)
            feeders: dict[str | None, int] = {}
            s = self.settings
            program = in_force(s.site, s.calendar, s.programs, now)
            for state in self.targets.values():
                decision = self.decide(state, now, program)
                wake = min([wake, *decision.upcoming])
                if state.level != decision.level:
                    turn = feeders.get(state.target.feeder, 0) if state.target.feeder else 0
                    feeders[state.target.feeder] = turn + 1
                    if turn:
                        await self.clock.sleep_until(now + timedelta(seconds=turn * self.settings.stagger))
                    await self._apply(state, decision)
                self._publish(state, decision, now)
            self._wake.clear()
            await sleep_or_wake(self.clock, wake, self._wake)

    async def _apply(self, state: TargetState, decision: Decision) -> None:
        target = state.target
        command = Command(
            target.device,
            None,
            values={target.point: round(decision.level, 3)},
            sender={"via": "lighting", "target": target.id, "reason": decision.reason, "detail": decision.detail},
        )
        answer = await self.commands.execute(command)
        self.sent += 1
        if answer.get("status") == "ok":
            state.level = decision.level
            log.info("%s: %s%% (%s: %s)", target.id, decision.level, decision.reason, decision.detail)
        else:
            error = answer.get("error") or {}
            self.refused.append(f"{target.id}: {error.get('code')}: {error.get('message')}")
            log.warning("%s: could not set %s%%: %s", target.id, decision.level, error.get("message"))

    def _publish(self, state: TargetState, decision: Decision, now: datetime) -> None:
        target = state.target
        reading = self.store.reading(target.device, target.point)
        actual = reading.value if reading is not None and isinstance(reading.value, (int, float)) else None
        event = LightingChanged(
            target.id,
            decision.level,
            decision.reason,
            decision.program,
            decision.detail,
            decision.program_level,
            float(actual) if actual is not None else None,
        )
        if state.last is None or _differs(state.last, event):
            state.last = LightingChanged(**{**event.to_json(), "ts": now.isoformat()})
            self.bus.publish(state.last)


def _said(event: Event | None) -> str:
    return "no switch point yet" if event is None else f"{event.at} ({event.when.isoformat()})"


def _differs(a: LightingChanged, b: LightingChanged) -> bool:
    keep = ("level", "reason", "program", "detail", "target_level", "actual")
    return any(getattr(a, k) != getattr(b, k) for k in keep)
