"""M-Bus profiles (`protocol: mbus`): each point is a variable data record, found by what it is.

    points:
      energy:       {quantity: energy, unit: kWh, device_class: energy, state_class: total_increasing}
      energy_month: {quantity: energy, storage: 1, unit: kWh}          # the last billing date's value
      flow_max:     {quantity: volume_flow, function: maximum, unit: m3/h}
      status:       {header: status, type: uint16}                     # the header's status byte

A record matches on `quantity`, `function`, `storage`, `tariff`, `subunit` and `modifier`;
`index` picks one of several that match (0: the first, in the meter's order).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.common.types import Strict
from gateway.points.types import INTEGER_TYPES, DataType
from gateway.profiles.model import PointFields, profile_model

QUANTITIES = (
    "energy", "volume", "mass", "on_time", "operating_time", "power", "volume_flow", "mass_flow",
    "flow_temperature", "return_temperature", "temperature_difference", "external_temperature", "pressure",
    "date", "date_time", "hca_units", "averaging_duration", "actuality_duration", "fabrication_number",
    "enhanced_identification", "bus_address", "voltage", "current", "error_flags", "digital_input",
    "digital_output", "firmware_version", "software_version", "hardware_version", "model_version",
    "customer_location", "customer", "access_number", "reset_counter", "battery_days", "plain",
    "manufacturer_specific", "unknown",
)  # fmt: skip
Quantity = Literal[QUANTITIES]  # type: ignore[valid-type]
HeaderField = Literal["ident", "manufacturer", "version", "medium", "access", "status"]
TYPES = frozenset(INTEGER_TYPES | {DataType.FLOAT32, DataType.FLOAT64, DataType.STRING, DataType.BITFIELD})


class MbusPoint(PointFields):
    quantity: Quantity | None = Field(None, description="what the record measures (its VIF)")
    function: Literal["instantaneous", "maximum", "minimum", "error"] | None = None
    storage: int | None = Field(None, ge=0, le=1 << 20, description="storage number (0: now, 1...: billing dates)")
    tariff: int | None = Field(None, ge=0, le=1 << 10)
    subunit: int | None = Field(None, ge=0, le=1 << 5)
    modifier: str | None = Field(None, max_length=40, description="a VIFE's meaning, as the records list it")
    index: int | None = Field(None, ge=0, le=63, description="which of the matching records (0: the first)")
    header: HeaderField | None = Field(None, description="a field of the telegram's header instead of a record")


class MbusLimits(Strict):
    telegrams: int = Field(4, ge=1, le=16, description="telegrams read per poll when the meter says more follow")
    reset: bool = Field(True, description="SND_NKE (or a new selection) before each read, so telegram 1 comes first")
    telegram_bytes: int = Field(120, ge=20, le=261, description="bytes of one telegram, for the plan's wire time")


class MeterId(Strict):
    manufacturer: str = Field(pattern=r"^[A-Z@]{3}$", description="three letters, as the header gives them")
    version: int = Field(0, ge=0, le=255)
    medium: int = Field(0, ge=0, le=255, description="EN 13757-3 medium code: 4 heat, 7 water, 6 warm water ...")


MbusProfile = profile_model(
    "mbus",
    MbusPoint,
    MbusPoint,
    limits=MbusLimits,
    meter=(MeterId | None, Field(None, description="the header this meter family sends; emulators use it")),
)


class RecordPlace:
    """Which record (or header field) a point reads."""

    __slots__ = ("function", "header", "index", "modifier", "quantity", "storage", "subunit", "tariff")

    def __init__(
        self,
        quantity: str | None,
        function: str,
        storage: int,
        tariff: int,
        subunit: int,
        modifier: str,
        index: int,
        header: str | None,
    ) -> None:
        self.quantity, self.function, self.storage, self.tariff = quantity, function, storage, tariff
        self.subunit, self.modifier, self.index, self.header = subunit, modifier, index, header

    def __repr__(self) -> str:
        if self.header:
            return f"header.{self.header}"
        extra = "".join(
            f" {k}={v}" for k, v in (("storage", self.storage), ("tariff", self.tariff), ("subunit", self.subunit)) if v
        )
        return f"{self.quantity} {self.function}{extra}{f' [{self.index}]' if self.index else ''}"
