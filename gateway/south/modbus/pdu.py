"""Modbus PDUs: build requests, know the length of the normal answer, and check answers strictly."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from gateway.south.modbus.errors import FrameError, ModbusExceptionResponse
from gateway.south.modbus.profile import Table

READ_FUNCTION = {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}
_HEADER = struct.Struct(">BHH")


def read_request(table: Table, address: int, count: int) -> bytes:
    return _HEADER.pack(READ_FUNCTION[table], address, count)


def write_registers_request(address: int, values: Sequence[int]) -> bytes:
    """FC06 for one register, FC16 for several."""
    if len(values) == 1:
        return _HEADER.pack(6, address, values[0])
    return _HEADER.pack(16, address, len(values)) + bytes([2 * len(values)]) + struct.pack(f">{len(values)}H", *values)


def write_coils_request(address: int, values: Sequence[bool]) -> bytes:
    """FC05 for one coil, FC15 for several (bits packed LSB first)."""
    if len(values) == 1:
        return _HEADER.pack(5, address, 0xFF00 if values[0] else 0)
    packed = bytearray((len(values) + 7) // 8)
    for i, on in enumerate(values):
        if on:
            packed[i // 8] |= 1 << (i % 8)
    return _HEADER.pack(15, address, len(values)) + bytes([len(packed)]) + bytes(packed)


def normal_response_length(request: bytes) -> int:
    """Length of the PDU a device sends back when all is well."""
    function: int = request[0]
    count: int = int.from_bytes(request[3:5], "big")
    if function in (1, 2):
        return 2 + (count + 7) // 8
    if function in (3, 4):
        return 2 + 2 * count
    return 5  # writes echo function, address and value or quantity


def check_response(request: bytes, response: bytes) -> bytes:
    """The data of a response (registers or packed bits), after checking it answers `request`."""
    function = request[0]
    if not response:
        raise FrameError("empty answer")
    if response[0] == function | 0x80 and len(response) == 2:
        raise ModbusExceptionResponse(function, response[1])
    if response[0] != function:
        raise FrameError(f"answer to function {response[0] & 0x7F} instead of {function}")
    if function <= 4:
        expected = normal_response_length(request)
        if len(response) != expected or response[1] != expected - 2:
            raise FrameError(f"answer of {len(response)} bytes, expected {expected}")
        return response[2:]
    if response[:5] != request[:5] and function in (5, 6):
        raise FrameError("write echo does not match the request")
    if function in (15, 16) and response[1:5] != request[1:5]:
        raise FrameError("write echo does not match the request")
    return b""
