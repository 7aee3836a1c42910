"""A virtual RS-485 line made of two pseudo-terminals and a relay between them.

The gateway opens one end (`gateway_path`, a real /dev/pts/N) with pyserial exactly
as it would open /dev/ttyUSB0; the emulated devices listen on the other end. A pty
moves bytes instantly, so the relay can re-create what a real line does: bytes take
their time on the wire at the line's baud rate, the line is half-duplex, and each
change of direction costs the 3.5-character silence Modbus RTU requires. With
`wire_timing` on, one read of N registers takes (13 + 2N) characters + 2 x t3.5
(8 bytes of request, 5 + 2N of answer, and the silence before each).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from gateway.south.modbus.wire import char_time, read_time, t35


def raw_port(link: Path | None = None) -> tuple[int, int]:
    """A pseudo-terminal in raw mode (bytes pass unchanged, no echo, no signals), as (master, slave).
    With `link`, a symlink there names the slave end, like /dev/ttyUSB0 names a USB serial port.
    Keep the slave open: the master then stays readable while nobody has the port open."""
    master, slave = os.openpty()
    tty.setraw(slave)
    if link is not None:
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(os.ttyname(slave))
    return master, slave


def transaction_time(registers: int, baudrate: int, parity: str = "E", stopbits: int = 1, device: float = 0.0) -> float:
    """Wire time of one FC03/04 read of `registers` registers: (13 + 2N) characters and two t3.5 silences."""
    return read_time(registers, False, baudrate, parity, stopbits) + device


@dataclass
class LineStats:
    to_devices: int = 0  # bytes
    to_gateway: int = 0
    noise: int = 0


class _Writer:
    """Non-blocking writes to a pty master, keeping order when the kernel buffer is full."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self.loop, self.fd = loop, fd
        self.pending: deque[bytes] = deque()
        self.waiting = False

    def write(self, data: bytes) -> None:
        self.pending.append(data)
        self._flush()

    def _flush(self) -> None:
        while self.pending:
            chunk = self.pending[0]
            try:
                sent = os.write(self.fd, chunk)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.pending.clear()
                break
            if sent < len(chunk):
                self.pending[0] = chunk[sent:]
                if not self.waiting:
                    self.waiting = True
                    self.loop.add_writer(self.fd, self._writable)
                return
            self.pending.popleft()
        if self.waiting:
            self.waiting = False
            self.loop.remove_writer(self.fd)

    def _writable(self) -> None:
        self._flush()

    def close(self) -> None:
        if self.waiting:
            self.loop.remove_writer(self.fd)
        self.pending.clear()


class PtyLine:
    """Two pty ends joined by a relay that can simulate wire time."""

    def __init__(
        self,
        baudrate: int = 9600,
        parity: str = "N",
        stopbits: int = 1,
        *,
        wire_timing: bool = False,
        bytesize: int = 8,
        turnaround: float | None = None,
        follow_speed: bool = False,
    ) -> None:
        """`turnaround`: silence at each change of direction (None: Modbus's t3.5). With `follow_speed` the line
        carries bytes only when the gateway's port is set to the devices' speed (`device_baud`, which a meter
        switching speed changes); otherwise they arrive as garbage, as on a real line at mismatched speeds."""
        self.baudrate, self.parity, self.stopbits, self.bytesize = baudrate, parity, stopbits, bytesize
        self.wire_timing = wire_timing
        self.turnaround = turnaround
        self.follow_speed = follow_speed
        self.device_baud = baudrate  # the speed the devices listen at
        self.mismatched = 0  # chunks garbled by a speed mismatch
        self._sent_at: deque[list[float]] = deque()  # [bytes left, speed, not before] of what devices sent, in order
        self.gateway_turnaround = 0.0  # seconds from an answer's last byte reaching the gateway to its next request
        self.late = 0.0  # seconds the relay's timers fired after the bytes were due (the emulation's own delay)
        self._delivered = 0.0
        self.stats = LineStats()
        self._fds: list[int] = []
        self._writers: dict[int, _Writer] = {}
        self._free_at = 0.0  # when the half-duplex line is next idle
        self._last_direction = 0
        self.gateway_path = ""
        self.device_path = ""
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def char(self) -> float:
        return char_time(self.device_baud, self.parity, self.stopbits, self.bytesize)

    def device_sends(self, count: int, baud: int, not_before: float = 0.0) -> None:
        """The devices are about to send `count` bytes at `baud` (their speed while they send); on a wire-timed
        line they may hand them over early, to go on the wire `not_before` (loop time) and no sooner."""
        self._sent_at.append([count, baud, not_before])

    def _speed_of(self, count: int) -> tuple[int, float]:
        """The speed the next `count` bytes from the devices were sent at, and when they may go on the wire."""
        baud, not_before = (int(self._sent_at[0][1]), self._sent_at[0][2]) if self._sent_at else (self.device_baud, 0.0)
        left = float(count)
        while left > 0 and self._sent_at:
            head = self._sent_at[0]
            used = min(left, head[0])
            head[0] -= used
            left -= used
            if head[0] == 0:
                self._sent_at.popleft()
        return baud, not_before

    def gateway_baud(self) -> int:
        """The speed the gateway's end of the line is set to now (termios belongs to the tty, not the fd)."""
        speed = termios.tcgetattr(self._fds[1])[5]
        return _SPEEDS.get(speed, 0)

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        gw_master, gw_slave = os.openpty()
        dev_master, dev_slave = os.openpty()
        self._fds = [gw_master, gw_slave, dev_master, dev_slave]
        # Raw mode: no echo, no CR/NL translation. Holding the slave ends open ourselves keeps
        # the masters readable when nobody has the port open (no EIO, no hang-up).
        for fd in (gw_slave, dev_slave):
            tty.setraw(fd)
        for fd in (gw_master, dev_master):
            os.set_blocking(fd, False)
        self.gateway_path, self.device_path = os.ttyname(gw_slave), os.ttyname(dev_slave)
        self._writers = {gw_master: _Writer(loop, gw_master), dev_master: _Writer(loop, dev_master)}
        loop.add_reader(gw_master, self._relay, gw_master, dev_master, 1)
        loop.add_reader(dev_master, self._relay, dev_master, gw_master, 2)

    def _relay(self, source: int, target: int, direction: int) -> None:
        try:
            data = os.read(source, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        if not data:
            return
        if direction == 1:
            if self._last_direction == 2 and self._loop is not None and self._delivered:
                self.gateway_turnaround += max(0.0, self._loop.time() - self._delivered)
            self.stats.to_devices += len(data)
        else:
            self.stats.to_gateway += len(data)
        baud, not_before = (self.device_baud, 0.0) if direction == 1 else self._speed_of(len(data))
        if self.follow_speed and self.gateway_baud() != baud:
            self.mismatched += 1
            data = bytes((b ^ 0x5A) | 0x80 for b in data)  # framing errors: nothing either side can read
        if not self.wire_timing or self._loop is None:
            self._writers[target].write(data)
            return
        now = self._loop.time()
        start = max(now, self._free_at, not_before)
        if direction != self._last_direction:
            silence = t35(self.baudrate, self.parity, self.stopbits) if self.turnaround is None else self.turnaround
            start = max(start, self._free_at + silence)
        self._last_direction = direction
        char = char_time(baud, self.parity, self.stopbits, self.bytesize)
        # A long answer at a slow speed arrives as it goes (a 460-character readout takes 15 s at 300 baud):
        # pieces of about 20 ms, each when its last character is through.
        piece = max(1, int(0.02 / char))
        for at in range(0, len(data), piece):
            chunk = data[at : at + piece]
            due = start + (at + len(chunk)) * char
            self._loop.call_at(due, self._deliver, target, chunk, due, at + len(chunk) == len(data))
        self._free_at = start + len(data) * char

    def _deliver(self, target: int, chunk: bytes, due: float, last: bool) -> None:
        if self._loop is None or not self._fds:  # the line was closed with bytes still on the wire
            return
        self._writers[target].write(chunk)
        now = self._loop.time()
        if last:  # what the receiver waits for: the end of a message
            self.late += max(0.0, now - due)
        if target == self._fds[0]:
            self._delivered = now

    def inject_noise(self, data: bytes) -> None:
        """Garbage on the line, as a bad termination or a motor starting nearby would produce."""
        self.stats.noise += len(data)
        self._writers[self._fds[0]].write(data)

    async def stop(self) -> None:
        if self._loop is not None:
            for fd in (self._fds[0], self._fds[2]):
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(fd)
        for writer in self._writers.values():
            writer.close()
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []


_SPEEDS = {getattr(termios, f"B{b}"): b for b in (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)}
