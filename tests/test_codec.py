"""Register codec: golden vectors for every type x byte order, property round trips, clear errors."""

from __future__ import annotations

import contextlib
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.points.types import INTEGER_TYPES, DataType, PointValueError, integer_range
from gateway.south.modbus.codec import ByteOrder, Codec, CodecError, registers_to_bytes

A, C, B, D = ByteOrder.ABCD, ByteOrder.CDAB, ByteOrder.BADC, ByteOrder.DCBA

# (type, value, {order: registers}) -- registers written out by hand from the value's
# big-endian bytes: ABCD as is, CDAB words reversed, BADC bytes swapped in each word, DCBA both.
GOLDEN: list[tuple[DataType, object, dict[ByteOrder, list[int]]]] = [
    (DataType.INT16, -2, {A: [0xFFFE], C: [0xFFFE], B: [0xFEFF], D: [0xFEFF]}),
    (DataType.UINT16, 0x1234, {A: [0x1234], C: [0x1234], B: [0x3412], D: [0x3412]}),
    (DataType.INT32, -123456789, {A: [0xF8A4, 0x32EB], C: [0x32EB, 0xF8A4], B: [0xA4F8, 0xEB32], D: [0xEB32, 0xA4F8]}),
    (DataType.UINT32, 0x12345678, {A: [0x1234, 0x5678], C: [0x5678, 0x1234], B: [0x3412, 0x7856], D: [0x7856, 0x3412]}),
    (DataType.FLOAT32, 12345.678, {A: [0x4640, 0xE6B6], C: [0xE6B6, 0x4640], B: [0x4046, 0xB6E6], D: [0xB6E6, 0x4046]}),
    (
        DataType.INT64,
        -72623859790382856,
        {
            A: [0xFEFD, 0xFCFB, 0xFAF9, 0xF8F8],
            C: [0xF8F8, 0xFAF9, 0xFCFB, 0xFEFD],
            B: [0xFDFE, 0xFBFC, 0xF9FA, 0xF8F8],
            D: [0xF8F8, 0xF9FA, 0xFBFC, 0xFDFE],
        },
    ),
    (
        DataType.UINT64,
        0x8877665544332211,
        {
            A: [0x8877, 0x6655, 0x4433, 0x2211],
            C: [0x2211, 0x4433, 0x6655, 0x8877],
            B: [0x7788, 0x5566, 0x3344, 0x1122],
            D: [0x1122, 0x3344, 0x5566, 0x7788],
        },
    ),
    (
        DataType.FLOAT64,
        123456.789,
        {
            A: [0x40FE, 0x240C, 0x9FBE, 0x76C9],
            C: [0x76C9, 0x9FBE, 0x240C, 0x40FE],
            B: [0xFE40, 0x0C24, 0xBE9F, 0xC976],
            D: [0xC976, 0xBE9F, 0x0C24, 0xFE40],
        },
    ),
    (DataType.BOOL, True, {A: [0x0001], C: [0x0001], B: [0x0100], D: [0x0100]}),
    (DataType.BITFIELD, 0xA51C, {A: [0xA51C], C: [0xA51C], B: [0x1CA5], D: [0x1CA5]}),
]


@pytest.mark.parametrize(("dtype", "value", "order"), [(t, v, o) for t, v, m in GOLDEN for o in m])
def test_golden_vectors_decode_and_encode(dtype: DataType, value: object, order: ByteOrder) -> None:
    registers = {o: r for t, _, m in GOLDEN if t is dtype for o, r in m.items()}[order]
    codec = Codec(dtype, order)
    assert codec.decode_registers(registers) == value
    assert codec.encode(value) == registers


def test_float32_golden_reads_back_as_written() -> None:
    # float32 holds 12345.677734375; the codec reports the shortest decimal that is that float.
    assert Codec(DataType.FLOAT32).decode_registers([0x4640, 0xE6B6]) == 12345.678
    assert Codec(DataType.FLOAT32, C).decode_registers([0xE6B6, 0x4640]) == 12345.678


@pytest.mark.parametrize(
    ("order", "registers"),
    [
        (A, [0x4142, 0x2043, 0x4400]),
        (B, [0x4241, 0x4320, 0x0044]),
        (C, [0x4400, 0x2043, 0x4142]),
        (D, [0x0044, 0x4320, 0x4241]),
    ],
)
def test_string_in_every_order(order: ByteOrder, registers: list[int]) -> None:
    codec = Codec(DataType.STRING, order, length=6)
    assert codec.decode_registers(registers) == "AB CD"
    assert codec.encode("AB CD") == registers


def test_string_padding_and_nul() -> None:
    codec = Codec(DataType.STRING, length=8)
    assert codec.encode("SDM") == [0x5344, 0x4D00, 0x0000, 0x0000]
    assert codec.decode_registers([0x5344, 0x4D20, 0x2020, 0x2020]) == "SDM"  # space padding
    assert codec.decode_registers([0x4142, 0x0043, 0x4445, 0x4647]) == "AB"  # text ends at NUL
    assert codec.registers == 4
    assert Codec(DataType.STRING, length=5).registers == 3


@pytest.mark.parametrize("order", list(ByteOrder))
@pytest.mark.parametrize("bit", [0, 3, 15])
def test_bit_of_a_register(order: ByteOrder, bit: int) -> None:
    codec = Codec(DataType.BIT, order, bit=bit)
    on = Codec(DataType.UINT16, order).encode(1 << bit)
    assert codec.decode_registers(on) is True
    assert codec.decode_registers(Codec(DataType.UINT16, order).encode(0xFFFF ^ (1 << bit))) is False
    assert codec.merge_bit(0x0000, True) == 1 << bit
    assert codec.merge_bit(0xFFFF, False) == 0xFFFF ^ (1 << bit)


@pytest.mark.parametrize("order", list(ByteOrder))
@pytest.mark.parametrize("raw_type", [DataType.UINT16, DataType.INT16, DataType.UINT32, DataType.INT32])
def test_enum_over_each_raw_type(order: ByteOrder, raw_type: DataType) -> None:
    codec = Codec(DataType.ENUM, order, raw_type=raw_type, enum={1: "open", 2: "close"})
    registers = Codec(raw_type, order).encode(2)
    assert codec.decode_registers(registers) == "close"
    assert codec.encode("close") == registers
    assert codec.encode(2) == registers
    with pytest.raises(CodecError, match="unknown enum value 7"):
        codec.decode_registers(Codec(raw_type, order).encode(7))
    with pytest.raises(CodecError, match="unknown choice 'shut'; expected one of open, close"):
        codec.encode("shut")


@pytest.mark.parametrize("order", list(ByteOrder))
def test_bitfield_uint32(order: ByteOrder) -> None:
    codec = Codec(DataType.BITFIELD, order, raw_type=DataType.UINT32)
    regs = Codec(DataType.UINT32, order).encode(0x80000001)
    assert codec.decode_registers(regs) == 0x80000001
    assert codec.registers == 2


def test_scale_and_offset_both_ways() -> None:
    amps = Codec(DataType.INT16, scale=0.1)
    assert amps.decode_registers([0xFF85]) == -12.3
    assert amps.encode(-12.3) == [0xFF85]
    celsius = Codec(DataType.UINT16, scale=0.1, offset=-40)
    assert celsius.decode_registers([500]) == 10.0
    assert celsius.encode(10.0) == [500]
    assert Codec(DataType.UINT16, scale=10).decode_registers([7]) == 70
    assert Codec(DataType.INT32, scale=0.001, decimals=1).decode_registers([0, 12345]) == 12.3


def test_decode_from_response_bytes_at_an_offset() -> None:
    # The engine decodes straight from a read's payload; a point sits some registers in.
    payload = registers_to_bytes([0, 0x4640, 0xE6B6, 0x1234])
    assert Codec(DataType.FLOAT32).decode(payload, 1) == 12345.678
    assert Codec(DataType.UINT16).decode(payload, 3) == 0x1234
    with pytest.raises(CodecError, match="need 2 registers at offset 3"):
        Codec(DataType.FLOAT32).decode(payload, 3)


@pytest.mark.parametrize(
    ("codec", "value", "message"),
    [
        (Codec(DataType.INT16), 40000, r"40000 is out of range for int16 \(-32768..32767\)"),
        (Codec(DataType.UINT16), -1, r"-1 is out of range for uint16 \(0..65535\)"),
        (Codec(DataType.UINT16, scale=0.1), 7000.0, r"7000.0 \(raw 70000\) is out of range for uint16"),
        (Codec(DataType.UINT32), 1 << 32, "out of range for uint32"),
        (Codec(DataType.INT64), 1 << 63, "out of range for int64"),
        (Codec(DataType.UINT16), "12", "expected a number, got str '12'"),
        (Codec(DataType.UINT16), True, "expected a number, got bool True"),
        (Codec(DataType.UINT16), 1.5, "expected an integer, got 1.5"),
        (Codec(DataType.FLOAT32), 1e39, "out of range for float32"),
        (Codec(DataType.FLOAT32), math.nan, "expected a finite number"),
        (Codec(DataType.FLOAT64), math.inf, "expected a finite number"),
        (Codec(DataType.STRING, length=4), "toolong", "text is 7 bytes, longer than the point's 4"),
        (Codec(DataType.STRING, length=4), 42, "expected a string"),
        (Codec(DataType.BOOL), 2, "expected true or false, got 2"),
        (Codec(DataType.BOOL), "on", "expected true or false"),
    ],
)
def test_encoding_refuses_instead_of_wrapping(codec: Codec, value: object, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codec.encode(value)


def test_bad_codec_definitions() -> None:
    with pytest.raises(CodecError, match="positive length"):
        Codec(DataType.STRING)
    with pytest.raises(CodecError, match=r"bit must be 0\.\.15"):
        Codec(DataType.BIT, bit=16)
    with pytest.raises(CodecError, match="scale must not be 0"):
        Codec(DataType.INT16, scale=0)
    with pytest.raises(CodecError, match=r"registers must be 0\.\.65535"):
        registers_to_bytes([70000])


# -- properties --------------------------------------------------------------------------------

orders = st.sampled_from(list(ByteOrder))


@given(dtype=st.sampled_from(sorted(INTEGER_TYPES)), order=orders, data=st.data())
def test_integers_round_trip(dtype: DataType, order: ByteOrder, data: st.DataObject) -> None:
    lo, hi = integer_range(dtype)
    value = data.draw(st.integers(lo, hi))
    codec = Codec(dtype, order)
    registers = codec.encode(value)
    assert all(0 <= r <= 0xFFFF for r in registers)
    assert len(registers) == codec.registers
    assert codec.decode_registers(registers) == value


@given(dtype=st.sampled_from(sorted(INTEGER_TYPES)), order=orders, data=st.data())
def test_any_registers_decode_and_re_encode_identically(dtype: DataType, order: ByteOrder, data: st.DataObject) -> None:
    codec = Codec(dtype, order)
    registers = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=codec.registers, max_size=codec.registers))
    assert codec.encode(codec.decode_registers(registers)) == registers


@given(order=orders, value=st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_float32_round_trip(order: ByteOrder, value: float) -> None:
    codec = Codec(DataType.FLOAT32, order)
    decoded = codec.decode_registers(codec.encode(value))
    assert isinstance(decoded, float)
    assert struct.pack(">f", decoded) == struct.pack(">f", value)  # the very same float32


@given(order=orders, value=st.floats(allow_nan=False, allow_infinity=False))
def test_float64_round_trip(order: ByteOrder, value: float) -> None:
    codec = Codec(DataType.FLOAT64, order)
    assert codec.decode_registers(codec.encode(value)) == value


@given(order=orders, raw=st.integers(-32768, 32767), scale=st.sampled_from([0.1, 0.01, 0.001, 10]))
def test_scaled_round_trip(order: ByteOrder, raw: int, scale: float) -> None:
    codec = Codec(DataType.INT16, order, scale=scale, offset=0)
    registers = Codec(DataType.INT16, order).encode(raw)
    assert codec.encode(codec.decode_registers(registers)) == registers


@given(order=orders, text=st.text(st.characters(codec="ascii", exclude_characters="\0"), max_size=12))
def test_string_round_trip(order: ByteOrder, text: str) -> None:
    codec = Codec(DataType.STRING, order, length=12)
    assert codec.decode_registers(codec.encode(text)) == text.rstrip(" ")


@given(order=orders, data=st.binary(min_size=0, max_size=300), offset=st.integers(0, 160))
def test_decoding_garbage_never_crashes(order: ByteOrder, data: bytes, offset: int) -> None:
    """Any bytes at any offset give a value or a point error (CodecError, or NotFiniteError for NaN and
    infinities: both PointValueError, what the driver turns into that point's error), nothing else."""
    for codec in (
        Codec(DataType.FLOAT32, order),
        Codec(DataType.UINT64, order),
        Codec(DataType.STRING, order, length=9),
        Codec(DataType.ENUM, order, enum={0: "a"}),
        Codec(DataType.BIT, order, bit=5),
    ):
        with contextlib.suppress(PointValueError):
            codec.decode(data, offset)
