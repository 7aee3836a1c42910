"""Independent Modbus peers written for the hardening tests, not the project's emulators.

`ModbusPeer` is a raw asyncio TCP server that speaks Modbus TCP (MBAP) or RTU frames
over TCP (a serial-to-Ethernet converter) straight from the bytes, with its own
frame parsing, so the gateway's framing is judged by code that shares nothing with
it. Each unit has a register map and a misbehaviour: answer normally, close the
connection in the middle of an answer, drip the answer one byte at a time, answer
with a wrong transaction id first, or not answer at all. A peer can also flood
garbage between answers, as a noisy converter does.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from dataclasses import dataclass, field

NAN32 = (0xFFFF, 0xFFFF)  # what many meters leave in unused float registers: a quiet NaN
INF32 = (0x7F80, 0x0000)
NEG_INF32 = (0xFF80, 0x0000)


def with_crc(frame: bytes) -> bytes:
    """RTU frame with its CRC-16/MODBUS, computed bit by bit (not the project's table-driven one)."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return frame + crc.to_bytes(2, "little")


def float32(value: float) -> tuple[int, int]:
    high, low = struct.unpack(">HH", struct.pack(">f", value))
    return high, low


@dataclass
class Unit:
    registers: dict[int, int] = field(default_factory=dict)  # holding and input share one map
    mode: str = "normal"  # normal | close | drip | wrong_tid | silent
    requests: int = 0
    writes: int = 0

    def set_float32(self, address: int, words: tuple[int, int]) -> None:
        self.registers[address], self.registers[address + 1] = words


class ModbusPeer:
    def __init__(self, *, rtu: bool = False, noise_per_second: int = 0, seed: int = 1) -> None:
        self.rtu = rtu
        self.units: dict[int, Unit] = {}
        self.noise_per_second = noise_per_second
        self.noise_sent = 0
        self.connections = 0
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    def unit(self, unit_id: int, mode: str = "normal") -> Unit:
        self.units[unit_id] = Unit(mode=mode)
        return self.units[unit_id]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def link(self, link_id: str = "net", timeout: float = 0.3) -> dict[str, object]:
        """The gateway's link to this peer, for a configuration."""
        kind = "modbus-rtu-tcp" if self.rtu else "modbus-tcp"
        return {"id": link_id, "type": kind, "host": "127.0.0.1", "port": self.port, "timeout": timeout}

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 2)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    # -- one connection ---------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        noise = asyncio.create_task(self._noise(writer)) if self.noise_per_second else None
        buf = b""
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    return
                buf += data
                while True:
                    request, buf = self._split(buf)
                    if request is None:
                        break
                    if not await self._answer(writer, *request):
                        return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            if noise is not None:
                noise.cancel()
            writer.close()
            self._tasks.discard(task)

    def _split(self, buf: bytes) -> tuple[tuple[int, int, bytes] | None, bytes]:
        """(tid, unit, pdu) of the first whole request in `buf`, and what is left."""
        if not self.rtu:
            if len(buf) < 7:
                return None, buf
            tid, _, length, unit = struct.unpack_from(">HHHB", buf)
            if len(buf) < 6 + length:
                return None, buf
            return (tid, unit, buf[7 : 6 + length]), buf[6 + length :]
        if len(buf) < 8:
            return None, buf
        size = 9 + buf[6] if buf[1] in (15, 16) else 8
        if len(buf) < size:
            return None, buf
        return (0, buf[0], buf[1 : size - 2]), buf[size:]

    def _frame(self, tid: int, unit: int, pdu: bytes) -> bytes:
        if self.rtu:
            return with_crc(bytes([unit]) + pdu)
        return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu

    async def _answer(self, writer: asyncio.StreamWriter, tid: int, unit_id: int, pdu: bytes) -> bool:
        """Answer one request as the unit's mode says; False when the connection is to close."""
        unit = self.units.get(unit_id)
        if unit is None:
            return True
        unit.requests += 1
        answer = self._frame(tid, unit_id, _respond(unit, pdu))
        if unit.mode == "silent":
            return True
        if unit.mode == "close":
            writer.write(answer[: len(answer) // 2])
            await writer.drain()
            return False
        if unit.mode == "drip":
            for i in range(len(answer)):
                writer.write(answer[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0.002)
            return True
        if unit.mode == "wrong_tid" and not self.rtu:
            writer.write(self._frame((tid + 7) & 0xFFFF, unit_id, _respond(unit, pdu)))
        writer.write(answer)
        await writer.drain()
        return True

    async def _noise(self, writer: asyncio.StreamWriter) -> None:
        chunk = max(1, self.noise_per_second // 50)
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while True:
                await asyncio.sleep(0.02)
                data = bytes(self._rng.randrange(256) for _ in range(chunk))
                writer.write(data)
                self.noise_sent += len(data)


def _respond(unit: Unit, pdu: bytes) -> bytes:
    function = pdu[0]
    if function in (3, 4):
        address, count = struct.unpack_from(">HH", pdu, 1)
        words = [unit.registers.get(address + i, 0) for i in range(count)]
        return bytes([function, 2 * count]) + struct.pack(f">{count}H", *words)
    if function in (6, 16):
        unit.writes += 1
    if function == 6:
        address, value = struct.unpack_from(">HH", pdu, 1)
        unit.registers[address] = value
        return pdu[:5]
    if function == 16:
        address, count = struct.unpack_from(">HH", pdu, 1)
        for i, word in enumerate(struct.unpack_from(f">{count}H", pdu, 6)):
            unit.registers[address + i] = word
        return pdu[:5]
    return bytes([function | 0x80, 1])
