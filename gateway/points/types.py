"""Point value types, whatever the protocol: what a point holds, and why a value could not be read.

A protocol turns its wire data into these (the Modbus register codec, a node's JSON);
everything above the protocols (the core, the MQTT tree, automation) sees only them.
"""

from __future__ import annotations

import math
from enum import StrEnum

Value = bool | int | float | str


class DataType(StrEnum):
    BOOL = "bool"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"
    BIT = "bit"  # one bit of a status word
    BITFIELD = "bitfield"  # a status word as an integer, with named bits
    ENUM = "enum"  # a raw integer with names


INTEGER_TYPES = frozenset(
    {DataType.INT16, DataType.UINT16, DataType.INT32, DataType.UINT32, DataType.INT64, DataType.UINT64}
)
FLOAT_TYPES = frozenset({DataType.FLOAT32, DataType.FLOAT64})
NUMERIC_TYPES = INTEGER_TYPES | FLOAT_TYPES
_BITS = {DataType.INT16: 16, DataType.UINT16: 16, DataType.INT32: 32, DataType.UINT32: 32}


def integer_range(dtype: DataType) -> tuple[int, int]:
    """The smallest and largest value of an integer type."""
    bits = _BITS.get(dtype, 64)
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if dtype.value.startswith("int") else (0, (1 << bits) - 1)


class PointValueError(ValueError):
    """A value that cannot be read from, or written to, a point's place on the device."""

    @property
    def reason(self) -> str:
        """What a state message says for the point: a short code where there is one."""
        return f"decode: {self}"


class NotFiniteError(PointValueError):
    """A float holding NaN or an infinity (meters often fill unused registers with 0xFFFF 0xFFFF)."""

    def __init__(self, value: float) -> None:
        self.value = value
        super().__init__(f"the device holds {value!r}, not a number")

    @property
    def reason(self) -> str:
        return "not_a_number" if math.isnan(self.value) else "infinite"


def finite(value: float) -> float:
    if math.isfinite(value):
        return value
    raise NotFiniteError(value)
