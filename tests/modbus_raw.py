"""Raw Modbus frames for tests that must see exactly the bytes a device sends (bad CRC, garbage, ...)."""

from __future__ import annotations

import asyncio
import struct

import serial

from hil.modbus.frames import crc16, with_crc


def rtu_read(unit: int, function: int, address: int, count: int) -> bytes:
    return with_crc(struct.pack(">BBHH", unit, function, address, count))


def tcp_read(unit: int, function: int, address: int, count: int, tid: int = 1) -> bytes:
    return struct.pack(">HHHBBHH", tid, 0, 6, unit, function, address, count)


def crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


async def tcp_exchange(port: int, frame: bytes, wait: float = 0.5) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(frame)
        await writer.drain()
        data = b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while (left := deadline - loop.time()) > 0:
            try:
                chunk = await asyncio.wait_for(reader.read(1024), left)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
        return data
    finally:
        writer.close()


def serial_exchange(path: str, frame: bytes, wait: float = 0.5, baudrate: int = 19200) -> bytes:
    with serial.Serial(path, baudrate, timeout=wait) as port:
        port.reset_input_buffer()
        port.write(frame)
        data = port.read(512)
        port.timeout = 0.05
        while chunk := port.read(512):
            data += chunk
        return data
