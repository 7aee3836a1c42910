"""Alarm rules, as the gateway configuration's `alarms` list gives them (see manager.py for what they do)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, model_validator

from gateway.common.types import Duration, Identifier, Seconds, Strict, format_duration

if TYPE_CHECKING:
    from gateway.config.loader import LoadedConfig

Severity = Literal["critical", "major", "minor", "warning"]
Number = Annotated[float, Field(allow_inf_nan=False)]
CONDITIONS = ("above", "below", "equals", "offline_for", "day_burner", "power", "supply_loss")
ClockTime = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM")]


class PowerCheck(Strict):
    """The point is a lamp's (or a group's) power: it must match `watts` at the level a lighting target is at."""

    target: str = Field(description="the lighting target whose level the lamp follows")
    watts: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] = Field(description="power at 100 %")
    tolerance: Annotated[float, Field(ge=0, le=1)] = Field(0.2, description="the share of `watts` it may be off by")


class SupplyCheck(Strict):
    """The point is a supply voltage: lost when it is below `share` of `nominal` (EN 50160 counts a supply
    interruption below 5 % of the declared voltage; a share of 0.9 catches dips as well)."""

    nominal: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] = Field(230.0, description="volts")
    share: Annotated[float, Field(gt=0, lt=1)] = Field(0.05, description="lost below this share of nominal")

    @property
    def threshold(self) -> float:
        return self.nominal * self.share


class AlarmRule(Strict):
    id: Identifier
    device: str
    point: str | None = None
    above: Number | None = None
    below: Number | None = None
    equals: bool | int | str | None = None
    hysteresis: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    delay: Annotated[Duration, Seconds(0, 86400)] = 0.0
    offline_for: Annotated[Duration, Seconds(1, 7 * 86400)] | None = None
    day_burner: str | None = Field(
        None, description="a lighting target: the point is a lamp level, on while the target is off"
    )
    power: PowerCheck | None = Field(
        None, description="the point is a power: too high or too low for the target's level"
    )
    supply_loss: SupplyCheck | None = Field(
        None, description="the point is a supply voltage: lost when it falls below a share of nominal"
    )
    severity: Severity = "major"
    message: str | None = Field(None, max_length=200, description="what an operator reads; default: the condition")
    during: tuple[ClockTime, ClockTime] | None = Field(
        None, description="only between these local times (a leak: night flow when nobody draws water)"
    )
    timezone: str = Field("UTC", description="IANA time zone of `during`")

    @model_validator(mode="after")
    def _one_condition(self) -> AlarmRule:
        given = [k for k in CONDITIONS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"an alarm rule has exactly one of: {', '.join(CONDITIONS)}")
        if self.offline_for is None and self.point is None:
            raise ValueError("above, below, equals, day_burner, power and supply_loss watch a point: give 'point'")
        try:
            ZoneInfo(self.timezone)
        except (KeyError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r} (an IANA name such as Europe/Madrid)") from None
        return self

    def in_window(self, now: datetime) -> bool:
        """Is `now` inside `during` (which may span midnight: 23:00-05:00)?"""
        if self.during is None:
            return True
        clock = now.astimezone(ZoneInfo(self.timezone)).strftime("%H:%M")
        start, end = self.during
        return start <= clock < end if start <= end else clock >= start or clock < end

    def describe(self) -> str:
        """What the alarm says when raised: its message, or its condition."""
        return self.message or self.condition()

    def condition(self) -> str:
        """The condition in words (what `cityedge check` lists), its delay and hours included."""
        text = self._condition()
        if self.delay:
            text += f" for {format_duration(self.delay)}"
        if self.during is not None:
            text += f", {self.during[0]}-{self.during[1]} {self.timezone}"
        return text

    def _condition(self) -> str:
        if self.offline_for is not None:
            return f"{self.device} offline for {format_duration(self.offline_for)}"
        what = f"{self.device}.{self.point}"
        if self.above is not None:
            return f"{what} above {self.above:g}"
        if self.below is not None:
            return f"{what} below {self.below:g}"
        if self.day_burner is not None:
            return f"{what} on while {self.day_burner} is switched off (day burner)"
        if self.power is not None:
            return f"{what} off the expected power for {self.power.target}'s level"
        if self.supply_loss is not None:
            return f"supply lost: {what} below {self.supply_loss.threshold:g} V"
        return f"{what} is {self.equals!r}"


class ProfileAlarm(Strict):
    """An alarm a profile ships for every device of its model; `point` may end in a pattern (`ballast_*_lamp_failure`):
    one alarm per matching point."""

    id: Identifier
    point: str = Field(max_length=64)
    above: Number | None = None
    below: Number | None = None
    equals: bool | int | str | None = None
    supply_loss: SupplyCheck | None = None
    hysteresis: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    delay: Annotated[Duration, Seconds(0, 86400)] = 0.0
    severity: Severity = "major"
    message: str | None = Field(None, max_length=200)

    @model_validator(mode="after")
    def _one_condition(self) -> ProfileAlarm:
        if sum(getattr(self, k) is not None for k in ("above", "below", "equals", "supply_loss")) != 1:
            raise ValueError("a profile alarm has exactly one of: above, below, equals, supply_loss")
        return self

    def for_device(self, device: str, points: list[str]) -> list[AlarmRule]:
        """The rules this alarm makes for one device, given its point names."""
        import fnmatch

        matched = [p for p in points if fnmatch.fnmatchcase(p, self.point)] if "*" in self.point else [self.point]
        rules = []
        for point in matched:
            suffix = "" if "*" not in self.point else "." + point
            fields = self.model_dump(exclude={"id", "point"})
            rules.append(AlarmRule(id=f"{device}.{self.id}{suffix}"[:64], device=device, point=point, **fields))
        return rules


def site_rules(loaded: LoadedConfig) -> tuple[list[AlarmRule], list[AlarmRule]]:
    """The configuration's own rules, and the alarms each device's profile ships (a device with `alarms: false` goes
    without; a configured rule with the same id replaces a shipped one)."""
    configured = list(loaded.config.alarms)
    ids = {rule.id for rule in configured}
    shipped: list[AlarmRule] = []
    for device in loaded.config.devices:
        resolved = loaded.devices.get(device.id)
        if resolved is None or not device.alarms:
            continue
        names = [p.name for p in resolved.points]
        for alarm in resolved.profile.alarms:
            shipped += [r for r in alarm.for_device(device.id, names) if r.id not in ids]
    return configured, shipped
