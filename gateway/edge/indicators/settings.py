"""The `indicators` section of a gateway configuration (see tracker.py for what is computed)."""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator

from gateway.common.types import Duration, Identifier, Seconds, Strict, Within

Level = Annotated[float, Field(allow_inf_nan=False, ge=-1e9, le=1e9)]


class LampFailures(Strict):
    device: str
    points: str = Field(
        max_length=64, description="the group's lamp failure bits: a point, or a pattern (ballast_*_lamp_failure)"
    )


class GroupSize(Strict):
    lamps: Annotated[int, Field(ge=1, le=10000)]
    watts: Annotated[float, Within(0.1, 100000)] = Field(description="each lamp's power at 100 %")
    failures: LampFailures | None = Field(None, description="where the group's lamp failures are read")


class FeederMeter(Strict):
    device: str
    point: str = Field(description="an energy counter in kWh (a meter's import register)")


class LevelWatch(Strict):
    """A water level (or any value) and its warning levels: how long it spent above each."""

    device: str
    point: str
    warnings: dict[Identifier, Level] = Field(min_length=1, max_length=8, description="name: level, e.g. high: 2.5")
    max_gap: Annotated[Duration, Seconds(1, 86400)] = Field(
        600.0, description="readings further apart than this leave the time between them uncounted"
    )


class IndicatorSettings(Strict):
    interval: Annotated[Duration, Seconds(1, 86400)] = 900.0
    timezone: str | None = Field(
        None, description="IANA time zone the months are counted in; default: the lighting site's, else UTC"
    )
    groups: dict[Identifier, GroupSize] = Field(default_factory=dict)
    feeders: dict[Identifier, FeederMeter] = Field(default_factory=dict)
    levels: dict[Identifier, LevelWatch] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (KeyError, ValueError):
                raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Madrid)") from None
        return value
