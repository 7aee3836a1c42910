"""IEC 62056-21 profiles (`protocol: iec62056`): each point is a data set of the readout, named by its OBIS code.

    points:
      energy_import: {obis: 1.8.0, unit: kWh, device_class: energy, state_class: total_increasing}
      max_demand:    {obis: 1.6.0, unit: kW}            # the first value of the set
      max_demand_at: {obis: 1.6.0, index: 1, type: string}  # its time stamp, the second

A meter writes `1-0:1.8.0*255` or `1.8.0`; `obis: 1.8.0` matches both. A value in another
prefix of the profile's unit (Wh for kWh) is converted; another unit is an error on the point.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from gateway.common.types import Strict
from gateway.points.types import INTEGER_TYPES, DataType
from gateway.profiles.model import PointFields, profile_model

OBIS = re.compile(r"^[0-9A-Za-z.:*&-]{1,32}$")
ModeCBaud = Literal[300, 600, 1200, 2400, 4800, 9600, 19200]
TYPES = frozenset(INTEGER_TYPES | {DataType.FLOAT32, DataType.FLOAT64, DataType.STRING})


class IecPoint(PointFields):
    obis: str | None = Field(None, description="address of the data set in the readout, e.g. 1.8.0 or C.1.0")
    index: int | None = Field(None, ge=0, le=15, description="which value of the data set (0: the first)")


class IecLimits(Strict):
    baud_switch: bool = Field(True, description="false: the meter does not honour the proposed speed; read at 300")
    max_baudrate: ModeCBaud | None = Field(None, description="highest speed to propose to this meter")
    readout_chars: int = Field(
        400, ge=16, le=65536, description="length of the meter's readout, for the read plan's wire time"
    )


IecProfile = profile_model(
    "iec62056",
    IecPoint,
    IecPoint,
    limits=IecLimits,
    identification=(
        str | None,
        Field(None, pattern=r"^/[A-Za-z]{3}[0-9A-I].{1,100}$", description="what the meter answers to a sign-on"),
    ),
)


class ObisPlace:
    """Where a point's value is in a readout."""

    __slots__ = ("index", "obis")

    def __init__(self, obis: str, index: int) -> None:
        self.obis, self.index = obis, index

    def __repr__(self) -> str:
        return f"{self.obis}[{self.index}]"
