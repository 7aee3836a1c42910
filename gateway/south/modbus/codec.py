"""Modbus register codec: registers <-> engineering values, for every type and byte order.

A `Codec` is built once per point and then decodes straight from the response
bytes of a read (big-endian registers, exactly as they travel on the wire), so the
hot path does one `struct` call and a multiply. Encoding checks type and range
and raises `CodecError` instead of wrapping or truncating silently.

Byte order names follow the common ABCD notation, where A is the most
significant byte of the value: ABCD is big-endian with the high word first,
CDAB swaps words (low word first), BADC swaps the bytes inside each word, DCBA
is fully little-endian. For 16-bit values only the byte swap matters.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from enum import StrEnum
from operator import itemgetter

from gateway.points.types import (
    FLOAT_TYPES,
    INTEGER_TYPES,
    DataType,
    NotFiniteError,
    PointValueError,
    Value,
    finite,
    integer_range,
)


class ByteOrder(StrEnum):
    ABCD = "ABCD"
    CDAB = "CDAB"
    BADC = "BADC"
    DCBA = "DCBA"


class CodecError(PointValueError):
    """A value that cannot be decoded from or encoded to registers."""


# struct code and width in registers of the fixed-size numeric types.
_NUMERIC: dict[DataType, tuple[str, int]] = {
    DataType.INT16: ("h", 1),
    DataType.UINT16: ("H", 1),
    DataType.INT32: ("i", 2),
    DataType.UINT32: ("I", 2),
    DataType.INT64: ("q", 4),
    DataType.UINT64: ("Q", 4),
    DataType.FLOAT32: ("f", 2),
    DataType.FLOAT64: ("d", 4),
}
# Raw register types allowed underneath enums and bitfields.
RAW_TYPES_FOR_ENUM = frozenset(INTEGER_TYPES - {DataType.INT64, DataType.UINT64})
RAW_TYPES_FOR_BITFIELD = frozenset({DataType.UINT16, DataType.UINT32})


def register_count(dtype: DataType, *, length: int = 0, raw_type: DataType | None = None) -> int:
    """Registers a value of this type occupies (strings: `length` bytes, two per register)."""
    if dtype is DataType.STRING:
        return (length + 1) // 2
    if dtype in (DataType.BOOL, DataType.BIT):
        return 1
    if dtype in (DataType.ENUM, DataType.BITFIELD):
        return _NUMERIC[raw_type or DataType.UINT16][1]
    return _NUMERIC[dtype][1]


def byte_permutation(order: ByteOrder, registers: int) -> tuple[int, ...]:
    """Index of the wire byte that holds each big-endian value byte (an involution)."""
    n = 2 * registers
    words = list(range(registers))
    if order in (ByteOrder.CDAB, ByteOrder.DCBA):
        words.reverse()
    swap = order in (ByteOrder.BADC, ByteOrder.DCBA)
    perm: list[int] = []
    for w in words:
        hi, lo = 2 * w, 2 * w + 1
        perm.extend((lo, hi) if swap else (hi, lo))
    assert len(perm) == n
    return tuple(perm)


def _scale_decimals(scale: float) -> int | None:
    """Decimals implied by a scale like 0.1 or 0.01, so 123 * 0.1 reports 12.3, not 12.300000000000001."""
    if isinstance(scale, int) or scale == 0:
        return None
    exponent = Decimal(repr(scale)).normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else None


_F32 = struct.Struct(">f")


@functools.lru_cache(maxsize=256)
def _compiled(fmt: str) -> struct.Struct:
    """One Struct per format, shared by every codec that needs it."""
    return struct.Struct(fmt)


def _shortest_float32(value: float) -> float:
    """The shortest decimal that is the same float32: 12345.677734375 reads back as 12345.678."""
    if not math.isfinite(value):
        raise NotFiniteError(value)
    # 7 significant digits almost always round-trip; 9 always do.
    exact = _F32.pack(value)
    for digits in ("%.7g", "%.8g"):
        candidate = float(digits % value)
        if _F32.pack(candidate) == exact:
            return candidate
    return float(f"{value:.9g}")


class Codec:
    """Decodes and encodes one point. Build once, call many times."""

    __slots__ = (
        "_decode_raw",
        "_enum_by_name",
        "_perm",
        "_post",
        "_struct",
        "bit",
        "byte_order",
        "decimals",
        "dtype",
        "enum",
        "length",
        "offset",
        "raw_type",
        "registers",
        "scale",
    )

    def __init__(
        self,
        dtype: DataType,
        byte_order: ByteOrder = ByteOrder.ABCD,
        *,
        scale: float = 1,
        offset: float = 0,
        length: int = 0,
        bit: int = 0,
        raw_type: DataType | None = None,
        enum: Mapping[int, str] | None = None,
        decimals: int | None = None,
    ) -> None:
        self.dtype = dtype
        self.byte_order = byte_order
        self.scale = scale
        self.offset = offset
        self.length = length
        self.bit = bit
        self.raw_type = raw_type or (DataType.UINT16 if dtype in (DataType.ENUM, DataType.BITFIELD) else None)
        self.enum = dict(enum or {})
        self._enum_by_name = {name: raw for raw, name in self.enum.items()}
        if dtype is DataType.STRING and length <= 0:
            raise CodecError("string points need a positive length")
        if dtype is DataType.BIT and not 0 <= bit <= 15:
            raise CodecError(f"bit must be 0..15, got {bit}")
        if scale == 0:
            raise CodecError("scale must not be 0")
        self.registers = register_count(dtype, length=length, raw_type=self.raw_type)
        self.decimals = decimals if decimals is not None else _scale_decimals(scale)
        self._perm = byte_permutation(byte_order, self.registers)
        identity = self._perm == tuple(range(2 * self.registers))
        self._struct = _compiled(">" + self._struct_code())
        self._decode_raw = self._build_raw_decoder(identity)
        self._post = self._build_post()

    # -- decoding ---------------------------------------------------------------------------

    def _struct_code(self) -> str:
        if self.dtype is DataType.STRING:
            return f"{2 * self.registers}s"
        if self.dtype in (DataType.BOOL, DataType.BIT):
            return "H"
        return _NUMERIC[self.raw_type or self.dtype][0]

    def _build_raw_decoder(self, identity: bool) -> Callable[[bytes | bytearray | memoryview, int], object]:
        """One struct call for ABCD and DCBA; two for the word/byte-swapped orders; a permutation for text."""
        unpack_from = self._struct.unpack_from
        if identity:
            return lambda buf, reg: unpack_from(buf, 2 * reg)[0]
        code, n = self._struct.format[1:], self.registers
        if self.dtype is not DataType.STRING:
            if self.byte_order is ByteOrder.DCBA:
                little = _compiled("<" + code).unpack_from
                return lambda buf, reg: little(buf, 2 * reg)[0]
            value_unpack = self._struct.unpack
            words_pack = _compiled(f">{n}H").pack
            if self.byte_order is ByteOrder.CDAB:
                words_be = _compiled(f">{n}H").unpack_from
                return lambda buf, reg: value_unpack(words_pack(*words_be(buf, 2 * reg)[::-1]))[0]
            words_swapped = _compiled(f"<{n}H").unpack_from  # BADC: each word's bytes reversed
            return lambda buf, reg: value_unpack(words_pack(*words_swapped(buf, 2 * reg)))[0]
        unpack = self._struct.unpack
        pick = itemgetter(*self._perm)
        width = 2 * n

        def permuted(buf: bytes | bytearray | memoryview, reg: int) -> object:
            start = 2 * reg
            return unpack(bytes(pick(buf[start : start + width])))[0]

        return permuted

    def _build_post(self) -> Callable[[object], Value]:
        """The step from the raw struct value to the engineering value, chosen once."""
        dtype = self.dtype
        if dtype is DataType.BOOL:
            return lambda raw: raw != 0
        if dtype is DataType.BIT:
            mask = 1 << self.bit
            return lambda raw: (raw & mask) != 0  # type: ignore[operator]
        if dtype is DataType.STRING:
            return _decode_text  # type: ignore[return-value]
        if dtype is DataType.BITFIELD:
            return int  # type: ignore[return-value]
        if dtype is DataType.ENUM:
            return self._enum_name
        scale, offset, decimals = self.scale, self.offset, self.decimals
        if dtype in FLOAT_TYPES:  # only floats can hold NaN or overflow to infinity when scaled
            if scale == 1 and offset == 0:
                if dtype is DataType.FLOAT32 and decimals is None:
                    return _shortest_float32  # type: ignore[return-value]
                if decimals is not None:
                    return lambda raw: round(finite(raw), decimals)  # type: ignore[arg-type]
                return finite  # type: ignore[return-value]
            if decimals is not None:
                return lambda raw: round(finite(raw * scale + offset), decimals)  # type: ignore[operator]
            return lambda raw: finite(raw * scale + offset)  # type: ignore[operator]
        if scale == 1 and offset == 0:
            if decimals is not None:
                return lambda raw: round(raw, decimals)  # type: ignore[call-overload]
            return lambda raw: raw  # type: ignore[return-value]
        if decimals is not None:
            return lambda raw: round(raw * scale + offset, decimals)  # type: ignore[operator]
        return lambda raw: raw * scale + offset  # type: ignore[operator]

    def _enum_name(self, raw: object) -> str:
        try:
            return self.enum[raw]  # type: ignore[index]
        except KeyError:
            raise CodecError(f"unknown enum value {raw}") from None

    def decode(self, buf: bytes | bytearray | memoryview, reg: int = 0) -> Value:
        """Decode the value starting `reg` registers into `buf` (big-endian register bytes)."""
        if 2 * (reg + self.registers) > len(buf):
            raise CodecError(f"need {self.registers} registers at offset {reg}, got {len(buf) // 2 - reg}")
        return self._post(self._decode_raw(buf, reg))

    def decode_registers(self, registers: Sequence[int]) -> Value:
        """Decode from a list of 16-bit register values (as pymodbus returns them)."""
        return self.decode(registers_to_bytes(registers))

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, value: object) -> list[int]:
        """Registers to write for `value`; raises CodecError on a wrong type or out-of-range value."""
        raw = self.to_raw(value)
        try:
            packed = self._struct.pack(raw)
        except (struct.error, OverflowError) as exc:
            raise CodecError(f"{value!r} does not fit {self.dtype}: {exc}") from None
        wire = bytes(packed[i] for i in self._perm)
        return list(struct.unpack(f">{self.registers}H", wire))

    def merge_bit(self, current: int, value: object) -> int:
        """The register value with this point's bit set or cleared (read-modify-write of a `bit` point)."""
        if self.dtype is not DataType.BIT:
            raise CodecError("merge_bit is only for bit points")
        on = _as_bool(value)
        mask = 1 << self.bit
        return (current | mask) if on else (current & ~mask & 0xFFFF)

    def to_raw(self, value: object) -> object:
        """The raw struct value for an engineering value, with type and range checks."""
        dtype = self.dtype
        if dtype in (DataType.BOOL, DataType.BIT):
            return 1 if _as_bool(value) else 0
        if dtype is DataType.STRING:
            return self._text_raw(value)
        if dtype is DataType.ENUM:
            return self._enum_raw(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CodecError(f"expected a number, got {type(value).__name__} {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise CodecError(f"expected a finite number, got {value!r}")
        raw_type = self.raw_type or dtype
        if raw_type in FLOAT_TYPES:
            try:
                raw_f = (value - self.offset) / self.scale
            except OverflowError:
                raise CodecError(f"{value!r} is out of range for {raw_type}") from None
            if not math.isfinite(raw_f) or (raw_type is DataType.FLOAT32 and abs(raw_f) > 3.4028234663852886e38):
                raise CodecError(f"{value!r} is out of range for {raw_type}")
            return raw_f
        return self._integer_raw(value, raw_type)

    def _integer_raw(self, value: int | float, raw_type: DataType) -> int:
        if self.scale == 1 and self.offset == 0:
            if isinstance(value, float) and not value.is_integer():
                raise CodecError(f"expected an integer, got {value!r}")
            raw = int(value)
        else:
            try:
                raw = round((value - self.offset) / self.scale)
            except (OverflowError, ValueError):
                raise CodecError(f"{value!r} is out of range for {raw_type}") from None
        lo, hi = integer_range(raw_type)
        if not lo <= raw <= hi:
            shown = f" (raw {raw})" if raw != value else ""
            raise CodecError(f"{value!r}{shown} is out of range for {raw_type} ({lo}..{hi})")
        return raw

    def _text_raw(self, value: object) -> bytes:
        if not isinstance(value, str):
            raise CodecError(f"expected a string, got {type(value).__name__} {value!r}")
        data = value.encode("utf-8")
        if len(data) > self.length:
            raise CodecError(f"text is {len(data)} bytes, longer than the point's {self.length}")
        return data.ljust(2 * self.registers, b"\0")

    def _enum_raw(self, value: object) -> int:
        if isinstance(value, str):
            if value in self._enum_by_name:
                return self._enum_by_name[value]
            raise CodecError(f"unknown choice {value!r}; expected one of {', '.join(self._enum_by_name)}")
        if isinstance(value, int) and not isinstance(value, bool) and value in self.enum:
            return value
        raise CodecError(f"expected one of {', '.join(self._enum_by_name)}, got {value!r}")


def _as_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise CodecError(f"expected true or false, got {value!r}")


def _decode_text(raw: bytes) -> str:
    # Devices pad with NUL or spaces; text ends at the first NUL.
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace").rstrip(" ")


def registers_to_bytes(registers: Sequence[int]) -> bytes:
    try:
        return struct.pack(f">{len(registers)}H", *registers)
    except struct.error as exc:
        raise CodecError(f"registers must be 0..65535: {exc}") from None
