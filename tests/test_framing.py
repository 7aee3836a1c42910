"""Framing and PDUs of the Modbus master: the answer is found in noisy bytes, every failure is classified."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.south.modbus.errors import CrcError, FrameError, ModbusExceptionResponse, TransactionError
from gateway.south.modbus.framing import MbapFramer, RtuFramer, crc16, final_error
from gateway.south.modbus.pdu import (
    check_response,
    normal_response_length,
    read_request,
    write_coils_request,
    write_registers_request,
)
from gateway.south.modbus.profile import Table

RTU = RtuFramer()
REQUEST = read_request(Table.HOLDING, 0x10, 2)  # fc 3, 2 registers: normal answer 2 + 4 bytes
ANSWER = bytes([3, 4, 0x12, 0x34, 0x56, 0x78])


def test_crc_reference_value() -> None:
    # The classic example from the Modbus over serial line spec: 01 03 00 00 00 0A -> CRC C5CD (sent CD C5)
    assert crc16(bytes.fromhex("01030000000a")) == 0xCDC5
    assert crc16(b"123456789") == 0x4B37


def test_requests() -> None:
    assert read_request(Table.INPUT, 0x48, 4) == bytes.fromhex("0400480004")
    assert write_registers_request(0x1F0, [1]) == bytes.fromhex("0601f00001")
    assert write_registers_request(0, [1, 2]) == bytes.fromhex("10000000020400010002")
    assert write_coils_request(3, [True]) == bytes.fromhex("050003ff00")
    assert write_coils_request(0, [True, False, True]) == bytes.fromhex("0f000000030105")
    assert normal_response_length(read_request(Table.COIL, 0, 9)) == 2 + 2


def test_rtu_answer_found_after_garbage() -> None:
    frame = RTU.build(7, ANSWER)
    found = RTU.scan(bytearray(b"\x00\xff\x13" + frame), 7, 3, 6)
    assert found.pdu == ANSWER and found.noise == 3 and found.end == 3 + len(frame)


def test_rtu_classifies_bad_crc_wrong_unit_and_incomplete() -> None:
    frame = bytearray(RTU.build(7, ANSWER))
    bad = frame[:-1] + bytes([frame[-1] ^ 0xFF])
    found = RTU.scan(bytearray(bad), 7, 3, 6)
    assert found.pdu is None and isinstance(found.suspect, CrcError) and found.settled
    other = RTU.build(8, ANSWER)
    found = RTU.scan(bytearray(other), 7, 3, 6)
    assert isinstance(found.suspect, FrameError) and "unit 8" in str(found.suspect)
    found = RTU.scan(frame[:5], 7, 3, 6)
    assert isinstance(found.suspect, FrameError) and "incomplete" in str(found.suspect) and not found.settled
    assert final_error(RTU.scan(bytearray(), 7, 3, 6)).kind == "timeout"


def test_rtu_exception_answer() -> None:
    frame = RTU.build(7, bytes([0x83, 2]))
    found = RTU.scan(bytearray(frame), 7, 3, 6)
    assert found.pdu == bytes([0x83, 2])
    with pytest.raises(ModbusExceptionResponse) as info:
        check_response(REQUEST, found.pdu)
    assert info.value.code == 2 and info.value.kind == "illegal_data_address"


def test_mbap_skips_late_answers_and_spots_bad_headers() -> None:
    framer = MbapFramer()
    late, current = framer.build(1, ANSWER, tid=4), framer.build(1, ANSWER, tid=5)
    found = framer.scan(bytearray(late + current), 1, 3, 6, tid=5)
    assert found.pdu == ANSWER and found.end == len(late) + len(current)
    broken = bytearray(current)
    broken[5] = 200  # a length that cannot be
    assert isinstance(framer.scan(broken, 1, 3, 6, tid=5).suspect, FrameError)
    assert "unit 9" in str(framer.scan(bytearray(framer.build(9, ANSWER, tid=5)), 1, 3, 6, tid=5).suspect)


def test_check_response_is_strict() -> None:
    assert check_response(REQUEST, ANSWER) == ANSWER[2:]
    for wrong in (bytes([4, 4, 0, 0, 0, 0]), bytes([3, 2, 0, 0]), bytes([3, 4, 0, 0]), b""):
        with pytest.raises(FrameError):
            check_response(REQUEST, wrong)
    write = write_registers_request(5, [9])
    assert check_response(write, write) == b""
    with pytest.raises(FrameError, match="echo"):
        check_response(write, write_registers_request(5, [8]))


@given(
    data=st.binary(max_size=300),
    unit=st.integers(0, 255),
    function=st.sampled_from([1, 2, 3, 4, 5, 6, 15, 16]),
    normal=st.integers(2, 252),
)
def test_fuzzed_bytes_never_crash_the_framers(data: bytes, unit: int, function: int, normal: int) -> None:
    for framer in (RtuFramer(), MbapFramer()):
        found = framer.scan(bytearray(data), unit, function, normal, 1)
        if found.pdu is None:
            assert isinstance(final_error(found), TransactionError)
        else:
            assert found.end <= len(data)


@given(
    request=st.sampled_from([REQUEST, read_request(Table.COIL, 0, 10), write_registers_request(1, [2, 3])]),
    answer=st.binary(max_size=260),
)
def test_fuzzed_answers_give_data_or_a_classified_error(request: bytes, answer: bytes) -> None:
    try:
        data = check_response(request, answer)
    except TransactionError:
        return
    assert isinstance(data, bytes)
