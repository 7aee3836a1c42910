"""The device profile format: what integrators write in `device_profiles/*.yaml`.

These models describe the file as written (defaults, points, repeat blocks,
parameters, limits). `gateway.profiles.expand` turns a validated profile into the
flat list of `PointSpec`s the engine, the emulators and the MQTT side use.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from gateway.config.types import Duration, Strict
from gateway.points.codec import ByteOrder, DataType

Number = int | float
Scalar = bool | int | float | str
PointName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_{}.-]{1,64}$")]
ProfileName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
Address = Annotated[int, Field(ge=0, le=65535)]


class Table(StrEnum):
    COIL = "coil"
    DISCRETE = "discrete"
    HOLDING = "holding"
    INPUT = "input"

    @property
    def is_bits(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE)

    @property
    def writable(self) -> bool:
        return self in (Table.COIL, Table.HOLDING)


class Access(StrEnum):
    R = "r"
    RW = "rw"
    W = "w"

    @property
    def readable(self) -> bool:
        return self is not Access.W

    @property
    def writable(self) -> bool:
        return self is not Access.R


class PointFields(Strict):
    """Everything a point may say. In `defaults` all of it is optional; points inherit from there."""

    table: Table | None = Field(None, description="Modbus table: coil, discrete, holding or input")
    type: DataType | None = Field(None, description="value type on the device")
    byte_order: ByteOrder | None = Field(None, description="ABCD (big-endian), CDAB (low word first), BADC, DCBA")
    length: int | None = Field(None, ge=1, le=250, description="string length in bytes")
    bit: int | None = Field(None, ge=0, le=15, description="bit number (0 = least significant) for type bit")
    bits: dict[int, str] | None = Field(None, description="names of the bits of a bitfield")
    raw_type: DataType | None = Field(None, description="register type under an enum or bitfield (default uint16)")
    enum: dict[int, str] | None = Field(None, description="raw value -> name, for type enum")
    scale: Number | None = Field(None, description="value = raw * scale + offset")
    offset: Number | None = None
    decimals: int | None = Field(None, ge=0, le=12, description="round decoded values to this many decimals")
    unit: str | None = Field(None, description="engineering unit, e.g. V, A, kWh, %")
    access: Access | None = Field(None, description="r (default), rw or w")
    min: Number | None = Field(None, description="lowest value a write may set")
    max: Number | None = Field(None, description="highest value a write may set")
    device_class: str | None = Field(None, description="Home Assistant device class hint, e.g. voltage, energy")
    state_class: Literal["measurement", "total", "total_increasing"] | None = None
    control: Literal["sbo"] | None = Field(None, description="sbo: writes need select-before-operate")
    description: str | None = None
    initial: Scalar | None = Field(None, description="value an emulator starts with")
    key: str | None = Field(None, description="node profiles: the telemetry key carrying this point")
    group: str | None = Field(None, description="poll group (see poll_groups); default: the device's poll interval")

    @field_validator("scale")
    @classmethod
    def _nonzero_scale(cls, value: Number | None) -> Number | None:
        if value == 0:
            raise ValueError("scale must not be 0")
        return value


class PointDefinition(PointFields):
    address: Address | None = Field(None, description="register or bit address (as documented by the vendor)")


class Parameter(Strict):
    default: int
    min: int | None = None
    max: int | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _default_in_range(self) -> Parameter:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        if (self.min is not None and self.default < self.min) or (self.max is not None and self.default > self.max):
            raise ValueError(f"default {self.default} is outside {self.min}..{self.max}")
        return self


class RepeatBlock(Strict):
    """Points generated from an index: address = base + stride * index + point address."""

    index: str = Field("i", pattern=r"^[a-z_][a-z0-9_]*$", description="name used as {name} in point names")
    count: int | str = Field(description="how many (an integer or a parameter expression)")
    start: int = Field(0, ge=0, description="first index value")
    base: int | str = Field(0, description="address base (an integer or a parameter expression)")
    stride: int = Field(ge=1, description="addresses between one index and the next")
    points: dict[PointName, PointDefinition]


class AddressRange(Strict):
    start: Address
    end: Address
    table: Table | None = Field(None, description="only this table; all register tables when absent")

    @model_validator(mode="after")
    def _ordered(self) -> AddressRange:
        if self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self


class Limits(Strict):
    max_registers: int = Field(125, ge=1, le=125, description="most registers one read may ask for")
    max_bits: int = Field(2000, ge=1, le=2000, description="most coils or discrete inputs per read")
    max_gap: int = Field(0, ge=0, le=124, description="unused registers a merged read may span")
    forbidden: list[AddressRange] = Field(default_factory=list, description="ranges that must never be read")
    addressing: Literal[0, 1] = Field(0, description="1 if the vendor's addresses start at 1")
    pause: Duration = Field(0.0, description="silence between two requests to this device")
    max_write_registers: int = Field(123, ge=1, le=123)


class SerialDefaults(Strict):
    """Factory line settings of the device, used by emulators and to flag mismatched links."""

    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1


class Profile(Strict):
    name: ProfileName = Field(description="profile id, equal to the file name without .yaml")
    manufacturer: str
    model: str
    description: str
    source: str = Field(description="where the register map comes from (manual, version, page)")
    protocol: Literal["modbus", "node"] = Field("modbus", description="modbus device, or a CityEdge ESP32 node")
    serial: SerialDefaults | None = None
    emulator: str | None = Field(None, description="behaviour model HIL emulators use by default (meter, lamp, ...)")
    address_base: int | str = Field(0, description="added to every address (an integer or a parameter expression)")
    parameters: dict[Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$")], Parameter] = Field(default_factory=dict)
    defaults: PointFields = Field(default_factory=PointFields)
    limits: Limits = Field(default_factory=Limits)
    poll_groups: dict[str, Duration] = Field(default_factory=dict, description="intervals of point groups")
    points: dict[PointName, PointDefinition] = Field(default_factory=dict)
    repeat: list[RepeatBlock] = Field(default_factory=list)
