"""The devices' end of an emulated serial line, shared by every device on it (meters on one RS-485 pair,
an M-Bus segment, a sensor on its own port).

What the gateway sends reaches every device; each answers (or not) with `Reply`s the bus
puts on the line after their delay. Replies of two devices that overlap on the wire
collide: the bus sends what a real line would carry, the bitwise AND of both (idle is
mark, a space from either wins), so identical bytes survive and different ones are
garbage with a wrong checksum, as M-Bus collision detection expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from hil.ptyline import PtyLine


@dataclass(frozen=True, slots=True)
class Reply:
    delay: float  # seconds after the request was heard
    data: bytes
    baud: int | None = None  # the device switches the line to this speed before it sends
    then_baud: int | None = None  # ... and to this one once the bytes are on the wire


class BusDevice(Protocol):
    def feed(self, data: bytes, now: float) -> Sequence[Reply]: ...


class SerialBus:
    def __init__(self, line: PtyLine) -> None:
        self.line = line
        self.devices: list[BusDevice] = []
        self.collisions = 0
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple[float, Reply]] = []  # (time due, reply) of the current answer window
        self._flush: asyncio.TimerHandle | None = None

    def attach(self, device: BusDevice) -> None:
        self.devices.append(device)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd = os.open(self.line.device_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        assert self._fd is not None and self._loop is not None
        try:
            data = os.read(self._fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        now = self._loop.time()
        replies = [reply for device in self.devices for reply in device.feed(data, now)]
        if self.line.wire_timing and replies:
            self._hand_over(now, replies)
            return
        for reply in replies:
            self._schedule(now + reply.delay, reply)

    def _hand_over(self, now: float, replies: list[Reply]) -> None:
        """On a wire-timed line the line itself keeps time: replies go to it at once, each to start on the wire at
        its due time (one timer fewer per answer, so the emulation's own delay stays out of the figures).
        Replies to one request that overlap on the wire collide, as in `_send_window`."""
        replies.sort(key=lambda r: r.delay)
        while replies:
            first = replies.pop(0)
            if first.baud is not None:
                self.line.device_baud = first.baud
            speed = self.line.device_baud
            ends = first.delay + len(first.data) * self.line.char
            merged = bytearray(first.data)
            while replies and replies[0].delay < ends:
                other = replies.pop(0)
                self.collisions += 1
                merged += b"\xff" * max(0, len(other.data) - len(merged))
                for i, byte in enumerate(other.data):
                    merged[i] &= byte
            self.line.device_sends(len(merged), speed, now + first.delay)
            self._write(bytes(merged))
            if first.then_baud is not None:
                self.line.device_baud = first.then_baud

    def emit(self, reply: Reply) -> None:
        """A device sends on its own (a streaming sensor), `reply.delay` seconds from now."""
        assert self._loop is not None
        if self.line.wire_timing:
            self._hand_over(self._loop.time(), [reply])
            return
        self._schedule(self._loop.time() + reply.delay, reply)

    def _schedule(self, due: float, reply: Reply) -> None:
        assert self._loop is not None
        self._pending.append((due, reply))
        self._pending.sort(key=lambda entry: entry[0])
        if self._flush is not None:
            self._flush.cancel()
        self._flush = self._loop.call_at(self._pending[0][0], self._send_window)

    def _send_window(self) -> None:
        """Send the first pending reply, merged with every other one that starts while it is on the wire."""
        assert self._loop is not None
        self._flush = None
        if not self._pending:
            return
        first_due, first = self._pending.pop(0)
        if first.baud is not None:
            self.line.device_baud = first.baud
        ends = first_due + len(first.data) * self.line.char
        merged = bytearray(first.data)
        while self._pending and self._pending[0][0] < ends:
            _, other = self._pending.pop(0)
            self.collisions += 1
            if len(other.data) > len(merged):
                merged += b"\xff" * (len(other.data) - len(merged))
            for i, byte in enumerate(other.data):
                merged[i] &= byte
        self.line.device_sends(len(merged), self.line.device_baud)
        self._write(bytes(merged))
        if first.then_baud is not None:  # listening at this speed again once it has sent
            self.line.device_baud = first.then_baud
        if self._pending:
            self._flush = self._loop.call_at(max(self._pending[0][0], self._loop.time()), self._send_window)

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._fd, data)

    async def stop(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
        self._pending.clear()
        if self._fd is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
