"""The `lighting` section of a gateway configuration: the site, programs, calendar and targets."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from gateway.common.types import Duration, Identifier, Seconds, Strict, Within
from gateway.edge.lighting.program import Calendar, Site, SwitchPoint


class Photocell(Strict):
    device: str
    point: str = "illuminance"
    on_below: Annotated[float, Within(0, 200000)] = Field(20.0, description="lux: dark enough to switch on")
    off_above: Annotated[float, Within(0, 200000)] = Field(40.0, description="lux: light enough to switch off")

    @model_validator(mode="after")
    def _hysteresis(self) -> Photocell:
        if self.off_above <= self.on_below:
            raise ValueError("off_above must be above on_below (the band between them is the hysteresis)")
        return self


class Motion(Strict):
    device: str
    point: str = "motion"
    level: Annotated[float, Within(0, 100)] = 100.0
    hold: Annotated[Duration, Seconds(1, 3600)] = Field(120.0, description="how long after the last motion")
    combine: Literal["max", "min", "set"] = "max"


class Target(Strict):
    id: Identifier
    device: str
    point: str = Field(description="a writable point: a DALI group's level, the broadcast level, a ballast")
    feeder: str | None = Field(None, description="targets on one feeder are staggered")
    photocell: Photocell | None = None
    motion: Motion | None = None


class LightingSettings(Strict):
    site: Site
    programs: dict[Identifier, list[SwitchPoint]]
    calendar: Calendar
    targets: list[Target]
    stagger: Annotated[Duration, Seconds(0, 60)] = Field(1.0, description="between targets on one feeder")
    override_for: Annotated[Duration, Seconds(1, 7 * 86400)] = Field(3600.0, description="an override's default")

    @model_validator(mode="after")
    def _programs_known(self) -> LightingSettings:
        for name in [self.calendar.default, *(rule.program for rule in self.calendar.rules)]:
            if name not in self.programs:
                raise ValueError(f"the calendar names program {name!r}, which is not among programs")
        ids = [t.id for t in self.targets]
        if len(ids) != len(set(ids)):
            raise ValueError("target ids must be unique")
        return self
