"""Lighting programs, calendars and the sun: what level a lamp group should have at any moment.

Shaped after TALQ's outdoor lighting model: a *calendar* of rules (by priority: specific
dates, date ranges, weekdays) selects a *program* for each local day; a program is a list
of *switch points* (a level, with a ramp time) at fixed local times or at sunset/sunrise
with an offset.

    programs:
      night:
        - {at: sunset+10m, level: 100}
        - {at: "00:30", level: 50, ramp: 2m}
        - {at: sunrise-15m, level: 0}

A switch point belongs to the calendar day it falls on: the level at any moment is that of
the latest switch point before it, looking back over the previous days as far as needed, so
a gateway that starts at 03:00 knows the lamps should be at 50 % without having seen 00:30.
Local times are in the site's time zone: on the night clocks go forward, a switch point at
a time that does not exist (02:30) happens when the clocks show 03:30; on the night they go
back, one at a time that exists twice (02:30) happens the first time. Each happens once.

Polar night and polar day (no sunrise or no sunset on a day, north of the Arctic circle):
on a day the sun never rises, sunrise points do not happen and sunset points happen at
midnight, so the lamps keep the program's night levels all day (fixed-time points, such as
a dimming at 00:30, still apply); on a day it never sets, only the sunrise points happen,
at midnight, so the lamps stay off all day.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from astral import Observer
from astral.sun import elevation, noon, sunrise, sunset
from pydantic import Field, field_validator

from gateway.common.types import Duration, Seconds, Strict, Within, parse_duration

AT = re.compile(
    r"^(?:(?P<clock>[0-2]?\d:[0-5]\d)|(?P<sun>sunset|sunrise)(?:(?P<sign>[+-])(?P<offset>[0-9.]+(?:ms|s|m|h)?))?)$"
)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
LOOK_BACK = 7  # days searched for the switch point in force (a program may switch only on some days)


class SwitchPoint(Strict):
    at: str = Field(description="HH:MM local time, or sunset/sunrise with an offset: sunset+15m, sunrise-10m")
    level: Annotated[float, Within(0, 100)] = Field(description="lamp level in percent")
    ramp: Annotated[Duration, Seconds(0, 3600)] = Field(0.0, description="how long the change takes (DALI fade)")

    @field_validator("at")
    @classmethod
    def _time(cls, value: str) -> str:
        match = AT.match(value.strip())
        if match is None:
            raise ValueError(f"{value!r} is not HH:MM, sunset, sunrise, or one of them with an offset (sunset+15m)")
        if match["clock"]:
            if int(match["clock"].split(":")[0]) > 23:
                hours = int(match["clock"].split(":")[0])
                raise ValueError(f"{value!r}: hours go to 23, not {hours}")
        elif match["offset"] and parse_duration(match["offset"]) > 6 * 3600:
            raise ValueError(f"{value!r}: an offset of more than 6h from the sun is no longer about the sun")
        return value.strip()


class Rule(Strict):
    program: str
    dates: list[date] = Field(default_factory=list, description="specific dates (holidays, festivals)")
    start: date | None = Field(None, alias="from", description="first day of a date range")
    end: date | None = Field(None, alias="to", description="last day of a date range")
    weekdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(default_factory=list)

    def applies(self, day: date) -> bool:
        if self.dates and day not in self.dates:
            return False
        if self.start is not None and day < self.start:
            return False
        if self.end is not None and day > self.end:
            return False
        return not self.weekdays or WEEKDAYS[day.weekday()] in self.weekdays


class Calendar(Strict):
    default: str = Field(description="the program of a day no rule selects")
    rules: list[Rule] = Field(default_factory=list, description="in priority order: the first that applies wins")

    def program_for(self, day: date) -> str:
        return next((rule.program for rule in self.rules if rule.applies(day)), self.default)


class Site(Strict):
    latitude: Annotated[float, Within(-90, 90)]
    longitude: Annotated[float, Within(-180, 180)]
    timezone: str = Field(description="IANA time zone, e.g. Europe/Madrid")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (KeyError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Madrid)") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True, slots=True)
class Event:
    """One switch point on one day: when, to what, and where it comes from."""

    when: datetime  # UTC
    level: float
    ramp: float
    program: str
    at: str  # the switch point as written
    day: date


@dataclass(frozen=True, slots=True)
class Sun:
    sunrise: datetime | None  # UTC; None on a day the sun does not rise
    sunset: datetime | None
    polar: Literal["day", "night"] | None = None


def sun_on(site: Site, day: date) -> Sun:
    """Sunrise and sunset of a local day (astral, standard refraction); polar days and nights said so."""
    return _sun(site.latitude, site.longitude, site.timezone, day)


@functools.lru_cache(maxsize=64)  # a controller asks about the same few days many times a minute
def _sun(latitude: float, longitude: float, timezone: str, day: date) -> Sun:
    observer, zone = Observer(latitude, longitude), ZoneInfo(timezone)
    try:
        rise = sunrise(observer, day, tzinfo=zone).astimezone(UTC)
    except ValueError:
        rise = None
    try:
        down = sunset(observer, day, tzinfo=zone).astimezone(UTC)
    except ValueError:
        down = None
    if rise is not None and down is not None:
        return Sun(rise, down)
    high = elevation(observer, noon(observer, day, tzinfo=zone))
    return Sun(rise, down, "day" if high > 0 else "night")


def local(site: Site, day: date, clock: time) -> datetime:
    """A wall-clock time of a local day as UTC: a time skipped by the clocks going forward is the time the
    clocks show after the jump; a time that happens twice, the first."""
    # PEP 495, fold=0: a time in the gap is read with the offset from before the jump (02:30 CET is 03:30 CEST),
    # a time that happens twice is its first occurrence.
    return datetime.combine(day, clock).replace(tzinfo=site.zone, fold=0).astimezone(UTC)


def when(site: Site, day: date, at: str) -> datetime | None:
    """The moment of a switch point on a local day, or None when it does not happen that day."""
    match = AT.match(at)
    assert match is not None  # validated
    if match["clock"]:
        hours, minutes = (int(x) for x in match["clock"].split(":"))
        return local(site, day, time(hours, minutes))
    sun = sun_on(site, day)
    base = sun.sunset if match["sun"] == "sunset" else sun.sunrise
    if base is None:
        happens_at_midnight = (match["sun"] == "sunset") == (sun.polar == "night")
        return local(site, day, time(0, 0)) if happens_at_midnight else None
    offset = parse_duration(match["offset"]) if match["offset"] else 0.0
    return base + timedelta(seconds=offset if match["sign"] != "-" else -offset)


def events_of(site: Site, calendar: Calendar, programs: dict[str, list[SwitchPoint]], day: date) -> list[Event]:
    name = calendar.program_for(day)
    out = []
    midnight_sun = sun_on(site, day).polar == "day"
    for point in programs.get(name, []):
        if midnight_sun and not point.at.startswith("sunrise"):
            continue  # no night at all: only the switch off (at midnight) happens
        moment = when(site, day, point.at)
        if moment is not None:
            out.append(Event(moment, point.level, point.ramp, name, point.at, day))
    return sorted(out, key=lambda e: e.when)


def in_force(
    site: Site, calendar: Calendar, programs: dict[str, list[SwitchPoint]], now: datetime
) -> tuple[Event | None, Event | None]:
    """The switch point in force at `now` (the latest before it), and the next one after it. Yesterday's are
    looked at with today's (sunset+5h falls after midnight); further back only when those two days have none."""
    today = now.astimezone(site.zone).date()
    last: Event | None = None
    for back in range(1, LOOK_BACK + 1):
        days = [today - timedelta(days=n) for n in range(back + 1)] if back == 1 else [today - timedelta(days=back)]
        passed = [e for day in days for e in events_of(site, calendar, programs, day) if e.when <= now]
        if passed:
            last = max(passed, key=lambda e: e.when)
            break
    upcoming: Event | None = None
    for ahead in range(1, LOOK_BACK + 1):
        days = [today + timedelta(days=n) for n in range(ahead + 1)] if ahead == 1 else [today + timedelta(days=ahead)]
        later = [e for day in days for e in events_of(site, calendar, programs, day) if e.when > now]
        if later:
            upcoming = min(later, key=lambda e: e.when)
            break
    return last, upcoming
