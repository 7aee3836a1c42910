"""One serial port on the event loop, for the protocols that talk to meters and sensors over a line.

Modbus RTU, IEC 62056-21, M-Bus and the ASCII sensors all open a port the same way
(pyserial sets speed, framing and RS-485 mode; the event loop reads it without a
thread), fail the same ways (a missing port, no permission, a port another program
holds, an adapter pulled out), and measure their wire time the same way. What differs
is what a complete answer looks like: each protocol hands `receive` a scanner that
says where its answer ends.

Waiting is by silence: `receive` gives up when no byte has arrived for `idle` seconds,
so a long answer at a slow speed (a meter readout at 300 baud takes many seconds) is
never cut off while it is still coming, and a device that stops in the middle is told
apart from one that never answered (`CorruptAnswer` with what came, not `Timeout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
import termios
from collections.abc import Callable
from typing import Annotated

import serial
import serial.rs485

from gateway.common.types import Duration, Seconds, Strict
from gateway.south.driver import ConnectionFailed, CorruptAnswer, Timeout

log = logging.getLogger("cityedge.serial")

Scan = Callable[[bytearray], int | None]  # where the answer in these bytes ends, or None: not yet


def char_time(baudrate: int, parity: str = "N", stopbits: int = 1, bytesize: int = 8) -> float:
    """Seconds per character: start bit, data bits, parity bit if any, stop bits."""
    return (1 + bytesize + (0 if parity == "N" else 1) + stopbits) / baudrate


class Rs485Settings(Strict):
    rts_level_for_tx: bool = True
    rts_level_for_rx: bool = False
    delay_before_tx: Annotated[Duration, Seconds(0, 1)] | None = None
    delay_before_rx: Annotated[Duration, Seconds(0, 1)] | None = None


def is_pty(path: str) -> bool:
    try:
        info = os.stat(path)
    except OSError:
        return False
    return stat.S_ISCHR(info.st_mode) and 136 <= os.major(info.st_rdev) <= 143  # Unix98 pty slaves


def classify(name: str, device: str, exc: serial.SerialException) -> ConnectionFailed:
    """What went wrong opening a port, in the words a technician acts on."""
    code = getattr(exc, "errno", None)
    if code == errno.ENOENT or "No such file" in str(exc):
        return ConnectionFailed(f"{name}: no serial port {device}", "port_missing")
    if code == errno.EACCES or "Permission denied" in str(exc):
        return ConnectionFailed(
            f"{name}: permission denied on {device} (add the user to the dialout group)", "permission_denied"
        )
    if "lock" in str(exc).lower() or code == errno.EBUSY:
        return ConnectionFailed(f"{name}: {device} is in use by another program", "port_busy")
    return ConnectionFailed(f"{name}: cannot open {device}: {exc}", "port_error")


class PortSettings:
    """Everything `open_port` needs, from any protocol's link model."""

    def __init__(
        self,
        device: str,
        baudrate: int,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: int = 1,
        rs485: Rs485Settings | None = None,
    ) -> None:
        self.device, self.baudrate, self.bytesize = device, baudrate, bytesize
        self.parity, self.stopbits, self.rs485 = parity, stopbits, rs485


def open_port(name: str, port: PortSettings, warned: list[bool]) -> serial.Serial:
    """The port opened non-blocking and exclusive, in RS-485 mode if asked; a classified ConnectionFailed if not.

    Pseudo-terminals (the emulated lines of the tests and `cityedge hil serve`) carry bytes, not parity
    bits, and some kernels refuse PARENB or CS7 on them: there the port is used as 8N1, said once."""

    def attempt(parity: str, bytesize: int) -> serial.Serial:
        return serial.Serial(
            port.device,
            port.baudrate,
            bytesize=bytesize,
            parity=parity,
            stopbits=port.stopbits,
            timeout=0,
            exclusive=True,
        )

    try:
        opened = attempt(port.parity, port.bytesize)
    except (serial.SerialException, termios.error) as exc:
        if isinstance(exc, termios.error):  # pyserial lets tcsetattr's own error through
            exc = serial.SerialException(f"cannot configure {port.device}: {exc.args[-1] if exc.args else exc}")
        framed = port.parity != "N" or port.bytesize != 8
        if framed and is_pty(port.device) and "Invalid argument" in str(exc):
            # Pseudo-terminals carry bytes: some kernels refuse parity or 7 data bits on them (and say so only
            # when nothing else changes). Bytes pass unchanged at 8N1; 7-bit data is still masked on reading.
            opened = attempt("N", 8)
            if not warned[0]:
                log.warning(
                    "%s: %s is a pseudo-terminal that refuses %d%s framing; using it as 8N1",
                    name,
                    port.device,
                    port.bytesize,
                    port.parity,
                )
            warned[0] = True
        else:
            raise classify(name, port.device, exc) from None
    if port.rs485 is not None:
        rs = port.rs485
        try:
            opened.rs485_mode = serial.rs485.RS485Settings(
                rts_level_for_tx=rs.rts_level_for_tx,
                rts_level_for_rx=rs.rts_level_for_rx,
                delay_before_tx=rs.delay_before_tx,
                delay_before_rx=rs.delay_before_rx,
            )
        except (ValueError, OSError, serial.SerialException) as exc:
            opened.close()
            raise ConnectionFailed(
                f"{name}: {port.device} does not support RS-485 mode: {exc}", "rs485_unsupported"
            ) from None
    os.set_blocking(opened.fileno(), False)
    return opened


class SerialLine:
    """A serial port read through the event loop into a buffer; answers are taken out of it by a scanner."""

    LIMIT = 65536  # bytes one answer may have: a meter's whole readout fits many times

    def __init__(self, name: str, port: PortSettings) -> None:
        self.name = name
        self.settings = port
        self.baudrate = port.baudrate
        self.mask = 0x7F if port.bytesize == 7 else 0xFF  # a 7-bit line's eighth bit is its parity
        self.reconnects = 0
        self.noise_bytes = 0  # bytes that answered nothing: late answers, line noise
        self.port: serial.Serial | None = None
        self.buf = bytearray()
        self.last_rx = 0.0
        self._arrived = asyncio.Event()
        self._lost: ConnectionFailed | None = None
        self._warned = [False]
        self.answers: list[bytes] | None = None  # a list: every answer is kept there (probes show the raw bytes)

    @property
    def connected(self) -> bool:
        return self.port is not None

    @property
    def char(self) -> float:
        s = self.settings
        return char_time(self.baudrate, s.parity, s.stopbits, s.bytesize)

    async def open(self) -> None:
        if self.port is not None:
            return
        port = open_port(self.name, self.settings, self._warned)
        asyncio.get_running_loop().add_reader(port.fileno(), self._readable)
        self.port, self.baudrate, self._lost = port, self.settings.baudrate, None
        self.buf.clear()
        self.reconnects += 1

    def set_baudrate(self, baudrate: int) -> None:
        """Change speed now (after what was sent is on the wire: see `sent`)."""
        if self.port is not None and baudrate != self.baudrate:
            try:
                self.port.baudrate = baudrate
            except (ValueError, OSError, serial.SerialException) as exc:
                raise ConnectionFailed(f"{self.name}: cannot set {baudrate} baud: {exc}", "port_error") from None
        self.baudrate = baudrate

    def _readable(self) -> None:
        if self.port is None:
            return
        try:
            data = os.read(self.port.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: the USB adapter was pulled out
            self._lost = ConnectionFailed(f"{self.name}: the port went away ({exc.strerror})", "port_lost")
            asyncio.get_running_loop().create_task(self.close())
            self._arrived.set()
            return
        if data:
            self.last_rx = asyncio.get_running_loop().time()
            self.buf += data.translate(_SEVEN) if self.mask == 0x7F else data
            if len(self.buf) > self.LIMIT:  # nobody is reading this fast enough: keep the newest
                self.noise_bytes += len(self.buf) - self.LIMIT
                del self.buf[: len(self.buf) - self.LIMIT]
            self._arrived.set()

    def send(self, data: bytes) -> None:
        if self.port is None:
            raise ConnectionFailed(f"{self.name}: port closed", "port_lost")
        try:
            written = os.write(self.port.fileno(), data)
        except OSError as exc:
            raise ConnectionFailed(f"{self.name}: write failed: {exc.strerror}", "port_lost") from None
        if written != len(data):  # a request is short; a full kernel buffer means a stuck line
            raise ConnectionFailed(f"{self.name}: serial output buffer full", "port_stuck")

    async def sent(self, count: int) -> None:
        """Wait until `count` bytes just sent have left the port (before a speed change, or to time a reply)."""
        await asyncio.sleep(count * self.char)

    def discard(self) -> int:
        """Forget what is waiting (it answered nothing we asked): counted as noise."""
        dropped = len(self.buf)
        self.noise_bytes += dropped
        self.buf.clear()
        return dropped

    async def receive(self, scan: Scan, idle: float, what: str, first: float | None = None) -> bytes:
        """The bytes up to where `scan` says the answer ends. `Timeout` when nothing came within `first`
        (default `idle`) seconds; `CorruptAnswer` when the answer stopped for `idle` seconds before its end."""
        loop = asyncio.get_running_loop()
        started, seen = loop.time(), len(self.buf)
        while True:
            if self._lost is not None:
                raise self._lost
            end = scan(self.buf)
            if end is not None:
                answer = bytes(self.buf[:end])
                del self.buf[:end]
                if self.answers is not None:
                    self.answers.append(answer)
                return answer
            if len(self.buf) >= self.LIMIT:
                self.discard()
                raise CorruptAnswer(f"{self.name}: more than {self.LIMIT} bytes without the end of {what}")
            quiet = idle if self.buf else (first if first is not None else idle)
            since = max(self.last_rx, started) if self.buf else started
            left = since + quiet - loop.time()
            if left <= 0:
                if self.buf:
                    got = bytes(self.buf[:40])
                    raise CorruptAnswer(
                        f"{self.name}: {what} stopped after {len(self.buf)} bytes ({got!r}...), "
                        f"nothing more for {quiet:g}s"
                    )
                raise Timeout(f"{self.name}: no {what} within {quiet:g}s")
            self._arrived.clear()
            if len(self.buf) != seen:
                seen = len(self.buf)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    async def close(self) -> None:
        port, self.port = self.port, None
        if port is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(port.fileno())
            with contextlib.suppress(Exception):
                port.close()


_SEVEN = bytes(b & 0x7F for b in range(256))
