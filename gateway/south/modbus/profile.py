"""Modbus in a device profile: the table and address of each point, its register codec, the device's limits.

Integrators write Modbus points flat, next to the neutral fields (`table`, `address`,
`byte_order`, `length`, `bit`, `raw_type`), as vendor manuals list them: that keeps a
profile as short as the manual's table. Here they become a point's `ModbusPlace`:
its wire address (after `limits.addressing`), how many registers or bits it takes,
and the codec that decodes them straight from the answer's bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from gateway.common.types import Duration, Seconds, Strict
from gateway.points.types import DataType, Value
from gateway.profiles.expand import PointSpec
from gateway.profiles.model import Access, PointFields, Profile, profile_model
from gateway.south.driver import Issue, Report
from gateway.south.modbus.codec import RAW_TYPES_FOR_BITFIELD, RAW_TYPES_FOR_ENUM, ByteOrder, Codec, CodecError

Address = Annotated[int, Field(ge=0, le=65535)]
BIT_VIEWS = frozenset({DataType.BIT, DataType.BITFIELD})


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


class ModbusPoint(PointFields):
    """A point's fields with the Modbus ones; in `defaults` and overrides all optional."""

    table: Table | None = Field(None, description="Modbus table: coil, discrete, holding or input")
    byte_order: ByteOrder | None = Field(None, description="ABCD (big-endian), CDAB (low word first), BADC, DCBA")
    length: int | None = Field(None, ge=1, le=250, description="string length in bytes")
    bit: int | None = Field(None, ge=0, le=15, description="bit number (0 = least significant) for type bit")
    raw_type: DataType | None = Field(None, description="register type under an enum or bitfield (default uint16)")


class ModbusPointDefinition(ModbusPoint):
    address: Address | None = Field(None, description="register or bit address (as documented by the vendor)")


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
    pause: Annotated[Duration, Seconds(0, 10)] = Field(0.0, description="silence between two requests to this device")
    max_write_registers: int = Field(123, ge=1, le=123, description="most registers one write may carry")


class SerialDefaults(Strict):
    """Factory line settings of the device, used by emulators and to flag mismatched links."""

    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1


ModbusProfile = profile_model(
    "modbus",
    ModbusPoint,
    ModbusPointDefinition,
    limits=Limits,
    default=True,
    serial=(SerialDefaults | None, None),
)

Forbidden = tuple[tuple[Table | None, int, int], ...]


@dataclass(frozen=True, slots=True)
class ModbusPlace:
    """Where a point is on a Modbus device, and how its registers become its value."""

    table: Table
    address: int  # wire address (0-based)
    registers: int  # registers (or bits) read for this point
    codec: Codec | None  # None for coils and discrete inputs

    @property
    def end(self) -> int:
        """Last wire address the point occupies."""
        return self.address + self.registers - 1

    def check_write(self, value: Value) -> None:
        if self.codec is not None:
            self.codec.encode(value)


def place(p: PointSpec) -> ModbusPlace:
    """A Modbus point's place (for code that only ever sees Modbus points)."""
    found: ModbusPlace = p.attributes
    return found


def forbidden_ranges(limits: Limits) -> Forbidden:
    """The profile's forbidden ranges in wire addresses."""
    shift = limits.addressing
    return tuple((r.table, r.start - shift, r.end - shift) for r in limits.forbidden)


def forbidden_hit(forbidden: Forbidden, table: Table, first: int, last: int) -> tuple[int, int] | None:
    """The first forbidden range that wire addresses first..last of `table` touch, or None.

    A range without a table applies to both register tables (not to coils and discrete inputs).
    The planner, the profile checks and the emulated devices all ask this one question.
    """
    for ftable, start, end in forbidden:
        applies = ftable is table if ftable is not None else not table.is_bits
        if applies and first <= end and last >= start:
            return start, end
    return None


def build_place(profile: Profile, f: dict[str, Any], base: int, bad: Report) -> ModbusPlace | None:
    """The point's place from its merged fields, or None after reporting what is wrong."""
    limits: Limits = profile.limits
    table = f.get("table")
    if table is None:
        bad(None, "missing table (set it on the point or in defaults)")
        return None
    table = Table(table)
    if "address" not in f:
        bad(None, "missing address")
        return None
    dtype = DataType(f["type"])
    access = Access(f.get("access", "r"))
    if table.is_bits and dtype is not DataType.BOOL:
        bad("type", f"{table.value} points are single bits: type must be bool, not {dtype.value}")
    if access.writable and not table.writable:
        bad(
            "access",
            f"{table.value} {'inputs' if table is Table.DISCRETE else 'registers'} are read-only; access must be r",
        )
    _register_checks(dtype, f, bad)
    shift = limits.addressing
    address = base + f["address"] - shift
    if address < 0:
        bad("address", f"address {f['address']} is below 1 but the profile uses 1-based addressing")
        return None
    codec = _make_codec(dtype, f, bad)
    if codec is None and not table.is_bits:
        return None
    registers = 1 if table.is_bits else (codec.registers if codec else 1)
    if address + registers - 1 > 65535:
        bad("address", f"point ends at {address + registers - 1 + shift}, beyond the last address 65535")
        return None
    top = limits.max_bits if table.is_bits else limits.max_registers
    if registers > top:
        bad(None, f"point needs {registers} registers but the device reads at most {top} at once")
        return None
    return ModbusPlace(table, address, registers, None if table.is_bits else codec)


def _register_checks(dtype: DataType, f: dict[str, Any], bad: Report) -> None:
    if dtype is DataType.STRING and "length" not in f:
        bad("length", "string points need a length (bytes)")
    if dtype is DataType.BIT and "bit" not in f:
        bad("bit", "bit points need the bit number (0-15)")
    if "raw_type" in f:
        raw = DataType(f["raw_type"])
        allowed = {DataType.ENUM: RAW_TYPES_FOR_ENUM, DataType.BITFIELD: RAW_TYPES_FOR_BITFIELD}.get(dtype)
        if allowed is None:
            bad("raw_type", "raw_type only applies to enum and bitfield points")
        elif raw not in allowed:
            bad("raw_type", f"{dtype.value} raw_type must be one of {', '.join(sorted(allowed))}")


def _make_codec(dtype: DataType, f: dict[str, Any], bad: Report) -> Codec | None:
    try:
        codec = Codec(
            dtype,
            ByteOrder(f.get("byte_order", "ABCD")),
            scale=f.get("scale", 1),
            offset=f.get("offset", 0),
            length=f.get("length", 0),
            bit=f.get("bit", 0),
            raw_type=DataType(f["raw_type"]) if "raw_type" in f else None,
            enum=f.get("enum"),
            decimals=f.get("decimals"),
        )
    except (CodecError, ValueError, KeyError) as exc:
        bad(None, str(exc))
        return None
    for field in ("min", "max", "initial"):
        if f.get(field) is not None:
            try:
                codec.to_raw(f[field])
            except CodecError as exc:
                bad(field, f"{field} cannot be encoded: {exc}")
    return codec


def point_issues(profile: Profile, points: Sequence[PointSpec]) -> Iterable[Issue]:
    limits: Limits = profile.limits
    yield from _overlaps(points)
    yield from _forbidden_hits(points, forbidden_ranges(limits), limits.addressing)
    for p in points:  # a write is one request (FC06 or FC16): the device must take the whole point at once
        here = place(p)
        if p.access.writable and not here.table.is_bits and here.registers > limits.max_write_registers:
            yield Issue(
                p.origin,
                f"'{p.name}' takes {here.registers} registers; this device writes at most "
                f"{limits.max_write_registers} at once (limits.max_write_registers)",
                key=True,
            )


def _overlaps(points: Sequence[PointSpec]) -> Iterator[Issue]:
    by_table: dict[Table, list[PointSpec]] = {}
    for p in points:
        by_table.setdefault(place(p).table, []).append(p)
    for table, members in by_table.items():
        members.sort(key=lambda p: place(p).address)
        active: list[PointSpec] = []
        for p in members:
            here = place(p)
            active = [a for a in active if place(a).end >= here.address]
            for other in active:
                if not _may_share(p, other):
                    span = f"{here.address}" if here.registers == 1 else f"{here.address}..{here.end}"
                    yield Issue(p.origin, f"'{p.name}' ({table.value} {span}) overlaps '{other.name}'", key=True)
            active.append(p)


def _may_share(a: PointSpec, b: PointSpec) -> bool:
    """Bit views of one status register may share it, as long as two bits are not the same bit."""
    if a.dtype not in BIT_VIEWS or b.dtype not in BIT_VIEWS:
        return False
    if a.dtype is DataType.BIT and b.dtype is DataType.BIT:
        ca, cb = place(a).codec, place(b).codec
        return ca is not None and cb is not None and ca.bit != cb.bit
    return True


def _forbidden_hits(points: Sequence[PointSpec], forbidden: Forbidden, shift: int) -> Iterator[Issue]:
    for p in points:
        here = place(p)
        hit = forbidden_hit(forbidden, here.table, here.address, here.end)
        if hit is not None:
            start, end = hit
            yield Issue(p.origin, f"'{p.name}' lies in the forbidden range {start + shift}..{end + shift}", key=True)
