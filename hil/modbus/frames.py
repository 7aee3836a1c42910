"""Byte-level helpers for emulated devices: CRC-terminated RTU frames and where the unit id sits."""

from __future__ import annotations

from gateway.south.modbus.framing import crc16


def with_crc(body: bytes) -> bytes:
    crc = crc16(body)
    return body + bytes((crc & 0xFF, crc >> 8))


def unit_of(frame: bytes, rtu: bool) -> int | None:
    """Unit id of an RTU frame (first byte) or a Modbus TCP frame (byte 6 of the MBAP header)."""
    index = 0 if rtu else 6
    return frame[index] if len(frame) > index else None
