"""ASCII sensor profiles (`protocol: ascii`): the `line` (request, terminator, checksum, how to split it)
and points that name their field: a `capture` (named group) of the pattern, or a `field` index after the delimiter.

    line: {terminator: "\\r", pattern: '^R(?P<range>\\d{4})$', format: "R{range:04.0f}"}
    points:
      range: {unit: mm, type: uint16}          # capture: its own name by default
"""

from __future__ import annotations

from pydantic import Field

from gateway.points.types import INTEGER_TYPES, DataType
from gateway.profiles.model import PointFields, profile_model
from gateway.south.ascii.lines import LineSpec

TYPES = frozenset(INTEGER_TYPES | {DataType.FLOAT32, DataType.FLOAT64, DataType.STRING, DataType.BOOL})


class AsciiPoint(PointFields):
    capture: str | None = Field(
        None, description="the pattern's named group with the value (default: the point's name)"
    )
    field: int | None = Field(None, ge=0, le=255, description="with a delimiter: the field's index, from 0")


AsciiProfile = profile_model(
    "ascii", AsciiPoint, AsciiPoint, line=(LineSpec, Field(description="how the sensor's lines look"))
)
