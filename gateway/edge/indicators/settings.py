"""The `indicators` section of a gateway configuration (see tracker.py for what is computed)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from gateway.common.types import Duration, Identifier, Seconds, Strict, Within


class GroupSize(Strict):
    lamps: Annotated[int, Field(ge=1, le=10000)]
    watts: Annotated[float, Within(0.1, 100000)] = Field(description="each lamp's power at 100 %")


class FeederMeter(Strict):
    device: str
    point: str = Field(description="an energy counter in kWh (a meter's import register)")


class IndicatorSettings(Strict):
    interval: Annotated[Duration, Seconds(1, 86400)] = 900.0
    groups: dict[Identifier, GroupSize] = Field(default_factory=dict)
    feeders: dict[Identifier, FeederMeter] = Field(default_factory=dict)
