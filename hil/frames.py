"""Byte-level helpers for Modbus frames: the RTU CRC and the unit id position per framing."""

from __future__ import annotations


def _table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _table()


def crc16(data: bytes) -> int:
    """Modbus RTU CRC-16 (poly 0xA001, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def with_crc(body: bytes) -> bytes:
    crc = crc16(body)
    return body + bytes((crc & 0xFF, crc >> 8))


def unit_of(frame: bytes, rtu: bool) -> int | None:
    """Unit id of an RTU frame (first byte) or a Modbus TCP frame (byte 6 of the MBAP header)."""
    index = 0 if rtu else 6
    return frame[index] if len(frame) > index else None
