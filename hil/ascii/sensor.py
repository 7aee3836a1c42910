"""An emulated ASCII sensor on a `SerialBus`, writing the lines its profile describes.

A sensor whose profile has a `request` answers each one (with `{address}` filled in, it
answers only its own); one without streams a line every `period` seconds. Values are
written with the profile line's `format`, checksummed and terminated as the profile says.

Faults: `silent`, `bad_checksum`, `garbage` (a line of noise before each line),
`no_terminator` (lines never end), `partial` (lines stop after that many bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from gateway.points.types import Value
from gateway.profiles.expand import ResolvedProfile
from gateway.south.ascii.lines import LineSpec, build_line
from hil.ptyline import PtyLine
from hil.serialbus import Reply, SerialBus

REACTION = 0.01


@dataclass
class SensorFaults:
    silent: bool = False
    bad_checksum: bool = False
    garbage: bool = False
    no_terminator: bool = False
    partial: int = 0

    def update(self, changes: dict[str, Any]) -> None:
        known = {f.name for f in fields(self)}
        for key in changes:
            if key not in known:
                raise ValueError(f"unknown sensor fault {key!r}; expected one of {', '.join(sorted(known))}")
        for key, value in changes.items():
            setattr(self, key, type(getattr(self, key))(value))


class AsciiSensor:
    def __init__(
        self,
        profile: ResolvedProfile,
        line: PtyLine,
        *,
        address: str = "",
        values: dict[str, Value] | None = None,
        period: float = 0.2,
    ) -> None:
        self.profile, self.line, self.address, self.period = profile, line, address, period
        self.spec: LineSpec = profile.profile.line  # type: ignore[attr-defined]
        self.faults = SensorFaults()
        self.values: dict[str, Value] = {p.name: p.initial if p.initial is not None else 0 for p in profile.points}
        self.values.update(values or {})
        self.lines = 0
        self._buf = bytearray()
        self._task: asyncio.Task[None] | None = None

    def render(self) -> bytes:
        raw = build_line(self.spec, dict(self.values))
        if self.faults.bad_checksum and self.spec.checksum is not None:
            end = len(self.spec.terminator)
            raw = raw[: -end - 1] + (b"0" if raw[-end - 1 : -end] != b"0" else b"1") + raw[-end:]
        if self.faults.no_terminator:
            raw = raw[: -len(self.spec.terminator)]
        if self.faults.partial:
            raw = raw[: self.faults.partial]
        if self.faults.garbage:
            raw = b"#\x7f~%" + self.spec.terminator.encode("latin-1") + raw
        return raw

    def start(self, bus: SerialBus) -> None:
        """Streaming sensors start sending."""
        if self.spec.request is None:
            self._task = asyncio.get_running_loop().create_task(self._stream(bus))

    async def _stream(self, bus: SerialBus) -> None:
        while True:
            await asyncio.sleep(self.period)
            if not self.faults.silent:
                self.lines += 1
                bus.emit(Reply(0.0, self.render()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def feed(self, data: bytes, now: float) -> Sequence[Reply]:
        if self.spec.request is None:
            return ()
        self._buf += data
        ask = self.spec.request.format(address=self.address).encode("latin-1")
        replies = []
        while (at := self._buf.find(ask)) >= 0:
            del self._buf[: at + len(ask)]
            if not self.faults.silent:
                self.lines += 1
                heard = 0.0 if self.line.wire_timing else len(ask) * self.line.char
                replies.append(Reply(REACTION + heard, self.render()))
        if len(self._buf) > 1024:
            self._buf.clear()
        return replies
