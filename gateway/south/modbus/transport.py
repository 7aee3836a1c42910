"""asyncio transports that carry one Modbus transaction at a time over TCP or a serial line.

A transport owns one connection: it (re)connects on demand, sends a framed request,
collects bytes until the framer finds the answer, and turns every way that can fail
into a classified `TransactionError`. The caller (one scheduler per link) guarantees
that transactions never overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import serial

from gateway.south.modbus.errors import ConnectionFailed, FrameError, TransactionError
from gateway.south.modbus.framing import Found, MbapFramer, RtuFramer, final_error
from gateway.south.modbus.links import ModbusRtuLink, ModbusRtuTcpLink, ModbusTcpLink
from gateway.south.modbus.pdu import normal_response_length
from gateway.south.modbus.wire import char_time, t35
from gateway.south.serialline import PortSettings, open_port

log = logging.getLogger("cityedge.modbus")
Framer = RtuFramer | MbapFramer
NOISE_LIMIT = 4096  # bytes of garbage one transaction may cost before it fails: a noisy line gets its share, no more


class Transport(asyncio.Protocol):
    """Shared receive logic; subclasses open and close the underlying byte stream."""

    settle = 0.005  # after a whole wrong frame, wait this long for a right one before giving up

    def __init__(self, framer: Framer, name: str) -> None:
        self.framer = framer
        self.name = name
        self.buf = bytearray()
        self.noise_bytes = 0  # garbage skipped before answers and stale bytes flushed
        self.reconnects = 0
        self._waiter: asyncio.Future[bytes] | None = None
        self._expect: tuple[int, int, int, int] = (0, 0, 0, 0)  # unit, function, normal length, tid
        self._settle_timer: asyncio.TimerHandle | None = None
        self._found = Found()
        self._noise_now = 0  # noise bytes during the current transaction
        self._tid = 0
        self.last_rx = 0.0

    # -- subclass hooks -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        raise NotImplementedError

    async def connect(self) -> None:
        raise NotImplementedError

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def _before_send(self) -> None:
        """Serial lines: keep the inter-frame silence."""

    # -- receiving --------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.last_rx = asyncio.get_running_loop().time()
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.noise_bytes += len(data)  # nobody asked: noise, or an answer that came too late
            return
        self.buf += data
        unit, function, normal_len, tid = self._expect
        found = self.framer.scan(self.buf, unit, function, normal_len, tid)
        if found.pdu is not None:
            self.noise_bytes += found.noise
            del self.buf[: found.end]
            self._cancel_settle()
            waiter.set_result(found.pdu)
            return
        if found.dead:  # bytes that can never be the answer: drop them, so every scan stays short
            self.noise_bytes += found.dead
            self._noise_now += found.dead
            del self.buf[: found.dead]
        if self._found.settled and not found.settled:
            found = self._found  # a whole wrong frame seen earlier says more than what is left
        self._found = found
        if self._noise_now > NOISE_LIMIT or len(self.buf) > NOISE_LIMIT:
            self._cancel_settle()
            waiter.set_exception(FrameError(f"more than {NOISE_LIMIT} bytes of noise instead of an answer"))
        elif found.settled and self._settle_timer is None:
            self._settle_timer = asyncio.get_running_loop().call_later(self.settle, self._give_up)

    def _give_up(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(final_error(self._found))

    def _cancel_settle(self) -> None:
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None

    def lost(self, exc: Exception | None, reason: str = "connection_reset") -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionFailed(f"{self.name}: connection lost ({exc or 'closed'})", reason))

    # -- one transaction ----------------------------------------------------------------------

    async def transact(self, unit: int, pdu: bytes, timeout: float) -> bytes:
        """Send `pdu` to `unit` and return the answer PDU (exceptions included, unchecked)."""
        if not self.connected:
            await self.connect()
        await self._before_send()
        self._tid = (self._tid + 1) & 0xFFFF
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bytes] = loop.create_future()
        self._waiter = waiter
        self._expect = (unit, pdu[0], normal_response_length(pdu) if pdu[0] <= 16 else 2, self._tid)
        self._found = Found()
        self._noise_now = 0
        self.noise_bytes += len(self.buf)  # whatever is left belongs to no request: late answers, noise
        self.buf.clear()
        try:
            self._write(self.framer.build(unit, pdu, self._tid))
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            error = final_error(self._found)
            if isinstance(self.framer, MbapFramer) and self.buf:
                await self.close()  # a TCP stream we can no longer frame: start over
            raise error from None
        except TransactionError as exc:
            if isinstance(self.framer, MbapFramer) and exc.kind == "framing":
                await self.close()
            raise
        finally:
            self._cancel_settle()
            self._waiter = None


class TcpTransport(Transport):
    """Modbus TCP, or RTU frames over TCP to a serial-to-Ethernet converter."""

    def __init__(self, link: ModbusTcpLink | ModbusRtuTcpLink) -> None:
        super().__init__(MbapFramer() if link.type == "modbus-tcp" else RtuFramer(), link.id)
        self.host, self.port = link.host, link.port
        self.connect_timeout = link.connect_timeout
        self.transport: asyncio.Transport | None = None

    @property
    def connected(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: self, self.host, self.port), self.connect_timeout
            )
        except ConnectionRefusedError:
            raise ConnectionFailed(
                f"{self.name}: {self.host}:{self.port} refused the connection", "connection_refused"
            ) from None
        except TimeoutError:
            raise ConnectionFailed(f"{self.name}: no answer from {self.host}:{self.port}", "connect_timeout") from None
        except OSError as exc:
            raise ConnectionFailed(
                f"{self.name}: cannot reach {self.host}:{self.port}: {exc.strerror or exc}", "unreachable"
            ) from None
        self.transport = transport
        self.buf.clear()
        self.reconnects += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.lost(exc)

    def _write(self, data: bytes) -> None:
        if self.transport is None:
            raise ConnectionFailed(f"{self.name}: not connected", "connection_reset")
        self.transport.write(data)

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()
            self.transport = None


class SerialTransport(Transport):
    """Modbus RTU on a serial port, opened and configured with pyserial, read through the event loop."""

    def __init__(self, link: ModbusRtuLink) -> None:
        super().__init__(RtuFramer(), link.id)
        self.link = link
        self.port: serial.Serial | None = None
        self.char_time = char_time(link.baudrate, link.parity, link.stopbits, link.bytesize)
        self.t35 = t35(link.baudrate, link.parity, link.stopbits, link.bytesize)
        self.settle = max(4 * self.t35, 0.005)
        self.parity_ignored = False

    @property
    def connected(self) -> bool:
        return self.port is not None

    async def connect(self) -> None:
        link = self.link
        warned = [self.parity_ignored]
        port = open_port(
            self.name,
            PortSettings(link.device, link.baudrate, link.bytesize, link.parity, link.stopbits, link.rs485),
            warned,
        )
        self.parity_ignored = warned[0]
        asyncio.get_running_loop().add_reader(port.fileno(), self._readable)
        self.port = port
        self.buf.clear()
        self.reconnects += 1

    def _readable(self) -> None:
        if self.port is None:
            return
        try:
            data = os.read(self.port.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: the USB adapter was unplugged
            asyncio.get_running_loop().create_task(self.close())
            self.lost(exc, "port_lost")
            return
        if data:
            self.data_received(data)

    async def _before_send(self) -> None:
        wait = self.last_rx + self.t35 - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)

    def _write(self, data: bytes) -> None:
        if self.port is None:
            raise ConnectionFailed(f"{self.name}: port closed", "port_lost")
        try:
            written = os.write(self.port.fileno(), data)
        except OSError as exc:
            raise ConnectionFailed(f"{self.name}: write failed: {exc.strerror}", "port_lost") from None
        if written != len(data):  # a request is a few bytes; a full kernel buffer means a stuck line
            raise ConnectionFailed(f"{self.name}: serial output buffer full", "port_stuck")

    async def close(self) -> None:
        port, self.port = self.port, None
        if port is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(port.fileno())
            with contextlib.suppress(Exception):
                port.close()


def make_transport(link: Any) -> Transport:
    if isinstance(link, ModbusRtuLink):
        return SerialTransport(link)
    return TcpTransport(link)
