"""A device's reading (a number or text it sent, with the unit it named) made into a point's typed value.

The protocols that read meters and sensors as text or as records (IEC 62056-21, M-Bus,
ASCII lines) share this: the profile's type, the unit it wants (a reading in another
prefix of the same unit is converted, `Wh` to `kWh`; another quantity is an error),
then `scale`, `offset` and `decimals`. Every way that fails is a `PointValueError`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from gateway.points.types import INTEGER_TYPES, NUMERIC_TYPES, DataType, PointValueError, Value, finite, integer_range
from gateway.points.units import UnitMismatch, convert

if TYPE_CHECKING:
    from gateway.profiles.expand import PointSpec

MAX_TEXT = 256


class UnitError(PointValueError):
    @property
    def reason(self) -> str:
        return f"unit: {self}"


def number(text: str) -> float:
    """A decimal as meters write it: `0012345.678`, `-1.5`, `1,5` (a decimal comma)."""
    cleaned = text.strip().replace(",", ".")
    if not cleaned or len(cleaned) > 40 or not all(c in "+-.0123456789eE" for c in cleaned):
        raise PointValueError(f"{text[:40]!r} is not a number")
    try:
        value = float(cleaned)
    except ValueError:
        raise PointValueError(f"{text[:40]!r} is not a number") from None
    return finite(value)


def typed(point: PointSpec, raw: float | int | str | bytes, unit: str | None = None) -> Value:
    """The point's value from what the device sent."""
    dtype = point.dtype
    if dtype is DataType.STRING:
        text = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
        if len(text) > MAX_TEXT or not text.isprintable():
            raise PointValueError(f"{text[:40]!r} is not printable text of at most {MAX_TEXT} characters")
        return text
    if dtype is DataType.BOOL:
        if isinstance(raw, (str, bytes)):
            text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
            if text.strip().lower() in ("1", "true", "on", "yes"):
                return True
            if text.strip().lower() in ("0", "false", "off", "no"):
                return False
            raise PointValueError(f"{text[:40]!r} is not on or off")
        return bool(raw)
    if dtype not in NUMERIC_TYPES and dtype not in (DataType.ENUM, DataType.BITFIELD):
        raise PointValueError(f"{dtype.value} points cannot be read from this protocol")
    value = number(raw.decode("latin-1") if isinstance(raw, bytes) else raw) if isinstance(raw, (str, bytes)) else raw
    if isinstance(value, float) and not math.isfinite(value):
        finite(value)
    if unit and point.unit:
        try:
            value = convert(float(value), unit, point.unit)
        except UnitMismatch as exc:
            raise UnitError(str(exc)) from None
    if point.scale is not None or point.offset is not None:
        value = value * (point.scale if point.scale is not None else 1) + (point.offset or 0)
    if dtype in INTEGER_TYPES or dtype in (DataType.ENUM, DataType.BITFIELD):
        if isinstance(value, float) and not value.is_integer():
            raise PointValueError(f"{value} is not a whole number for a {dtype.value} point")
        whole = int(value)
        lo, hi = integer_range(dtype) if dtype in INTEGER_TYPES else (0, 2**64 - 1)
        if not lo <= whole <= hi:
            raise PointValueError(f"{whole} does not fit {dtype.value}")
        return whole
    result = float(value)
    if point.decimals is not None:
        result = round(result, point.decimals)
    return finite(result)
