"""Small value types shared by the profile and gateway configuration models (durations, ids, bounds).

Every duration and number a file can hold is bounded: NaN and infinity are refused
everywhere, and each setting has the range in which it makes sense (`Within`), so a
typo can neither spin a loop at 100 % CPU nor make the gateway wait for ever.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

_DURATION = re.compile(r"^\s*(\d{1,12}(?:\.\d{1,9})?)\s*(ms|s|m|h|d)?\s*$")
_PART = r"\d{1,12}(?:\.\d{1,9})?\s*(?:ms|s|m|h|d)"
_COMPOUND = re.compile(rf"^\s*(?:{_PART}\s*){{2,4}}$")  # 2h45m, 1d12h, 1m30s
_PARTS = re.compile(r"(\d{1,12}(?:\.\d{1,9})?)\s*(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
DURATION_PATTERN = r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d)?|(\d+(\.\d+)?\s*(ms|s|m|h|d)\s*){2,4})\s*$"
YEAR = 365 * 86400.0
DAY = 86400.0


def parse_duration(value: Any) -> float:
    """Seconds from `500ms`, `1s`, `5m`, `2h`, `1d`, a sum of them (`2h45m`) or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}: use a number of seconds or a string like 500ms, 1s, 5m")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"bad duration {value!r}: must be a finite number of seconds")
        if value < 0:
            raise ValueError(f"bad duration {value!r}: must not be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        if _COMPOUND.match(value):
            return sum(float(n) * _UNIT_SECONDS[u] for n, u in _PARTS.findall(value))
    raise ValueError(f"bad duration {value!r}: use a number of seconds or a string like 500ms, 1s, 5m")


def format_duration(seconds: float) -> str:
    """A duration as a configuration would write it: 500ms, 10s, 5m, 2h45m, 1d12h (the inverse of parse_duration)."""
    if 0 < seconds < 1:
        return f"{seconds * 1000:g}ms"
    if not float(seconds).is_integer():
        return f"{seconds:g}s"
    rest, parts = int(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


@dataclass(frozen=True, slots=True)
class Within:
    """Annotation: the value must lie in low..high (and not be 0 when `nonzero`); shown in the JSON Schema too."""

    low: float
    high: float
    nonzero: bool = False
    seconds: bool = False  # show bounds as durations (500ms, 2s) in messages

    def _shown(self, value: float) -> str:
        if not self.seconds:  # whole numbers in full (a budget of 1000000 MB, an address of 4294967295)
            return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"
        if 0 < value < 1:
            return f"{value * 1000:g}ms"
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if value >= size and value % size == 0:
                return f"{value / size:g}{unit}"
        return f"{value:g}s"

    def _check(self, value: float) -> float:
        if self.nonzero and value == 0:
            raise ValueError("must not be 0")
        if not self.low <= value <= self.high:
            low, high, got = self._shown(self.low), self._shown(self.high), self._shown(value)
            raise ValueError(f"must be between {low} and {high}, got {got}")
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        out = copy.deepcopy(handler(schema))  # WithJsonSchema hands every user the same dict
        for branch in out.get("anyOf", [out]):
            if branch.get("type") in ("number", "integer"):  # nested bounds narrow each other
                branch["minimum"] = max(branch.get("minimum", self.low), self.low)
                branch["maximum"] = min(branch.get("maximum", self.high), self.high)
        return out


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": DURATION_PATTERN}],
            "description": "seconds, or a string such as 500ms, 1s, 5m, 2h",
        }
    ),
    Within(0, YEAR, seconds=True),
]


def Seconds(low: float, high: float) -> Within:
    """Bounds of a duration setting: `Annotated[Duration, Seconds(0.01, DAY)]`."""
    return Within(low, high, seconds=True)


Identifier = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="letters, digits, '-', '_' and '.'; usable as an MQTT topic level",
    ),
]


class Strict(BaseModel):
    """Base for every configuration model: unknown keys are mistakes, not extensions; NaN is never a number."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False, defer_build=True)
