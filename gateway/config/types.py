"""Small value types shared by the profile and gateway configuration models (durations, ids)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"


def parse_duration(value: Any) -> float:
    """Seconds from `500ms`, `1s`, `5m`, `2h`, `1d` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}: use a number of seconds or a string like 500ms, 1s, 5m")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"bad duration {value!r}: must not be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    raise ValueError(f"bad duration {value!r}: use a number of seconds or a string like 500ms, 1s, 5m")


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": DURATION_PATTERN}],
            "description": "seconds, or a string such as 500ms, 1s, 5m, 2h",
        }
    ),
]

Identifier = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="letters, digits, '-', '_' and '.'; usable as an MQTT topic level",
    ),
]


class Strict(BaseModel):
    """Base for every configuration model: unknown keys are mistakes, not extensions."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
