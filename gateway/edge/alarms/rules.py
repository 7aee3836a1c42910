"""Alarm rules, as the gateway configuration's `alarms` list gives them (see manager.py for what they do)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from gateway.common.types import Duration, Identifier, Seconds, Strict

Severity = Literal["critical", "major", "minor", "warning"]
Number = Annotated[float, Field(allow_inf_nan=False)]


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
    severity: Severity = "major"
    message: str | None = Field(None, max_length=200, description="what an operator reads; default: the condition")

    @model_validator(mode="after")
    def _one_condition(self) -> AlarmRule:
        given = [k for k in ("above", "below", "equals", "offline_for") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("an alarm rule has exactly one of: above, below, equals, offline_for")
        if self.offline_for is None and self.point is None:
            raise ValueError("above, below and equals watch a point: give 'point'")
        return self

    def describe(self) -> str:
        if self.message:
            return self.message
        if self.offline_for is not None:
            return f"{self.device} offline for {self.offline_for:g}s"
        what = f"{self.device}.{self.point}"
        if self.above is not None:
            return f"{what} above {self.above:g}"
        if self.below is not None:
            return f"{what} below {self.below:g}"
        return f"{what} is {self.equals!r}"
