"""Real Modbus peers for emulated devices: pymodbus servers over TCP, RTU over TCP and RTU on a pty.

pymodbus does the protocol; CityEdge plugs in at two places. `BusContext` is the
server's datastore: it routes each request to the device on that unit id, stays
silent for unit ids nobody answers to (as an RS-485 bus does), and applies the
request-level faults (no answer, exception codes, slow answers). The server's
packet hook applies the frame-level faults (bad CRC, garbage, wrong unit id).
Connection-level faults (dropped and refused connections) are methods of the
endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable
from typing import Any, cast

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from gateway.south.modbus.framing import crc16
from hil.modbus.device import READ_FUNCTIONS, WRITE_FUNCTIONS, EmulatedDevice, Silent
from hil.modbus.frames import unit_of, with_crc
from hil.ptyline import PtyLine

log = logging.getLogger("cityedge.hil")


class BusContext:
    """The datastore pymodbus calls for every request: one per line or endpoint, many unit ids."""

    def __init__(self, devices: Iterable[EmulatedDevice]) -> None:
        self.devices = {d.unit: d for d in devices}

    def device_ids(self) -> list[int]:
        return list(self.devices)

    def _device(self, unit: int) -> EmulatedDevice:
        device = self.devices.get(unit)
        if device is None:
            raise NoSuchIdException(f"no device on unit {unit}")  # the server then stays silent
        return device

    async def _admit(self, device: EmulatedDevice) -> ExcCodes | None:
        try:
            device.check_answerable()
        except Silent:
            raise NoSuchIdException("silent") from None
        device.stats.requests += 1
        if device.faults.delay:
            await asyncio.sleep(device.faults.delay)
        if device.faults.exception:
            device.stats.exceptions += 1
            return ExcCodes(device.faults.exception)
        return None

    async def async_getValues(self, device_id: int, func_code: int, address: int, count: int = 1) -> Any:
        device = self._device(device_id)
        if func_code in WRITE_FUNCTIONS:  # the echo pymodbus builds after a write
            values = device.peek(WRITE_FUNCTIONS[func_code], address, count)
            return [bool(v) for v in values] if func_code in (5, 15) else values
        table = READ_FUNCTIONS.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if device.faults.ignore_long_reads and count > device.faults.ignore_long_reads:
            raise NoSuchIdException("silent: too long for this device")
        if func_code != 23 and (refused := await self._admit(device)) is not None:
            return refused
        result = device.read(table, address, count)
        if isinstance(result, int):
            device.stats.exceptions += 1
            return ExcCodes(result)
        return [bool(v) for v in result] if table.is_bits else result

    async def async_setValues(self, device_id: int, func_code: int, address: int, values: Any) -> ExcCodes | None:
        device = self._device(device_id)
        table = WRITE_FUNCTIONS.get(func_code)
        if table is None and func_code != 23:
            return ExcCodes.ILLEGAL_FUNCTION
        if (refused := await self._admit(device)) is not None:
            return refused
        code = device.write(table or READ_FUNCTIONS[func_code], address, [int(v) for v in values])
        if code is not None:
            device.stats.exceptions += 1
            return ExcCodes(code)
        return None

    def mangle(self, packet: bytes, rtu: bool) -> bytes:
        """Frame-level faults of the answering device, applied to the bytes about to be sent."""
        unit = unit_of(packet, rtu)
        device = self.devices.get(unit) if unit is not None else None
        if device is None:
            return packet
        faults = device.faults
        if faults.wrong_unit:
            other = (unit % 247) + 1 if unit is not None else 1
            packet = with_crc(bytes([other]) + packet[1:-2]) if rtu else packet[:6] + bytes([other]) + packet[7:]
        if faults.corrupt:
            if rtu:
                crc = crc16(packet[:-2]) ^ 0x5A5A
                packet = packet[:-2] + bytes((crc & 0xFF, crc >> 8))
            else:
                length = int.from_bytes(packet[4:6], "big") + 3
                packet = packet[:4] + length.to_bytes(2, "big") + packet[6:]
        if faults.garbage:
            packet = os.urandom(faults.garbage) + packet
        return packet


class _TrackingTcpServer(ModbusTcpServer):
    """A pymodbus TCP server that remembers its connections, so faults can drop them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handlers: set[Any] = set()

    def callback_new_connection(self) -> Any:
        handler = super().callback_new_connection()  # type: ignore[no-untyped-call]
        self.handlers.add(handler)
        return handler


class TcpEndpoint:
    """Modbus TCP (MBAP framing) or RTU-over-TCP on a loopback port."""

    def __init__(self, devices: Iterable[EmulatedDevice], *, host: str = "127.0.0.1", port: int = 0, rtu: bool = False):
        self.context = BusContext(devices)
        self.host, self.port, self.rtu = host, port, rtu
        self.server: _TrackingTcpServer | None = None
        self.refusing = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        server = _TrackingTcpServer(
            [],
            framer=FramerType.RTU if self.rtu else FramerType.SOCKET,
            address=(self.host, self.port),
            ignore_missing_devices=True,
            trace_packet=self._trace,
        )
        server.context = self.context  # type: ignore[assignment]  # our datastore, duck-typed
        await server.serve_forever(background=True)
        self.port = cast(asyncio.Server, server.transport).sockets[0].getsockname()[1]
        self.server = server

    def _trace(self, sending: bool, packet: bytes) -> bytes:
        return self.context.mangle(packet, self.rtu) if sending else packet

    def drop_connections(self) -> int:
        """Close every open connection, as a device reboot or a flaky switch does."""
        if self.server is None:
            return 0
        dropped = 0
        for handler in list(self.server.handlers):
            transport = getattr(handler, "transport", None)
            if transport is not None and not transport.is_closing():
                transport.abort()
                dropped += 1
        self.server.handlers.clear()
        return dropped

    async def refuse(self, on: bool) -> None:
        """Stop listening (connections are refused) or listen again on the same port."""
        if on and not self.refusing:
            self.refusing = True
            await self._close()
        elif not on and self.refusing:
            self.refusing = False
            await self.start()

    async def _close(self) -> None:
        if self.server is not None:
            self.drop_connections()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.shutdown(), 5)  # type: ignore[no-untyped-call]
            self.server = None

    async def stop(self) -> None:
        await self._close()


class SerialEndpoint:
    """Modbus RTU on a virtual RS-485 line: several unit ids on one pty pair."""

    def __init__(
        self,
        devices: Iterable[EmulatedDevice],
        *,
        baudrate: int = 9600,
        parity: str = "N",
        stopbits: int = 1,
        wire_timing: bool = False,
    ) -> None:
        self.context = BusContext(devices)
        self.line = PtyLine(baudrate, parity, stopbits, wire_timing=wire_timing)
        self.server: Any = None

    @property
    def address(self) -> str:
        return self.line.gateway_path

    async def start(self) -> None:
        await self.line.start()
        server = ModbusSerialServer(
            [],
            framer=FramerType.RTU,
            port=self.line.device_path,
            baudrate=self.line.baudrate,
            # A pty carries bytes, not parity bits, and some kernels refuse PARENB on a pty;
            # the line's parity still counts in its wire timing.
            parity="N",
            stopbits=self.line.stopbits,
            ignore_missing_devices=True,
            trace_packet=self._trace,
        )
        server.context = self.context  # type: ignore[assignment]  # our datastore, duck-typed
        await server.serve_forever(background=True)
        self.server = server

    def _trace(self, sending: bool, packet: bytes) -> bytes:
        return self.context.mangle(packet, True) if sending else packet

    def drop_connections(self) -> int:
        return 0  # a serial line has no connections to drop

    async def refuse(self, on: bool) -> None:
        """A serial line cannot refuse; the closest is silence, which the timeout fault gives."""

    async def stop(self) -> None:
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.shutdown(), 5)
            self.server = None
        await self.line.stop()
