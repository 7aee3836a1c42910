"""The ASCII line driver: serial sensors that speak text, polled with a request or streaming on their own.

One poll is one line. A polled sensor gets the profile's `request` (with `{address}` for
sensors that share an RS-485 pair) and its answer is read up to the terminator. For a
sensor that streams, what came since the last poll is dropped and the next whole line is
taken; a damaged one (checksum, no match) is skipped for the one after, within the
timeout, and counted. Fields become points by `capture` or `field` (`profile.py`) with the
point's type, scale and decimals.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from gateway.points.types import DataType, PointValueError, Value
from gateway.profiles.expand import PointSpec
from gateway.profiles.model import Profile
from gateway.south.ascii.lines import LineError, LineSpec, parse_line
from gateway.south.ascii.links import AsciiLink
from gateway.south.ascii.profile import TYPES, AsciiPoint, AsciiProfile
from gateway.south.driver import (
    DeviceRefused,
    Issue,
    LinkTransport,
    PolledDevice,
    Report,
    Timeout,
    register,
)
from gateway.south.serialline import SerialLine, char_time
from gateway.south.values import typed
from gateway.south.wholeread import WholeReadDriver

STREAM_TRIES = 3  # damaged lines skipped within one poll of a streaming sensor


@dataclass(frozen=True, slots=True)
class FieldPlace:
    key: str | int  # named group, or index after the delimiter

    def __repr__(self) -> str:
        return f"field {self.key}" if isinstance(self.key, int) else f"<{self.key}>"


class AsciiTransport(SerialLine):
    def __init__(self, link: AsciiLink) -> None:
        super().__init__(link.id, link.port())
        self.link = link
        self.skipped = 0  # damaged lines of streaming sensors skipped


class AsciiDriver(WholeReadDriver):
    name: ClassVar[str] = "ascii"
    read_only: ClassVar[str] = "ASCII sensor points are read-only"
    profile_model = AsciiProfile
    point_fields = AsciiPoint
    link_models = (AsciiLink,)
    types = TYPES

    def default_type(self, fields: Mapping[str, Any]) -> DataType:
        return DataType.FLOAT64

    def attributes(self, profile: Profile, name: str, fields: dict[str, Any], base: int, bad: Report) -> Any:
        spec: LineSpec = profile.line  # type: ignore[attr-defined]
        if fields.get("access", "r") != "r":
            bad("access", "ASCII sensor points are read-only: access must be r")
            return None
        if spec.delimiter is not None:
            if fields.get("field") is None:
                bad(None, "missing required key 'field' (the index of the value after the delimiter, from 0)")
                return None
            return FieldPlace(fields["field"])
        capture = fields.get("capture") or name
        if capture not in spec.groups:
            known = ", ".join(sorted(spec.groups)) or "none"
            bad(
                "capture" if fields.get("capture") else None,
                f"the line's pattern has no group {capture!r} (it has: {known})",
            )
            return None
        return FieldPlace(capture)

    def check_points(self, profile: Any, points: Sequence[PointSpec]) -> list[Issue]:
        return []

    def summary(self, profile: Any) -> list[str]:
        spec: LineSpec = profile.line
        how = f"polled with {spec.request!r}" if spec.request else "streaming"
        check = f", {spec.checksum.kind} checksum" if spec.checksum else ""
        return [f"{how}, lines end {spec.terminator!r}{check}"]

    def columns(self, profile: Any, point: PointSpec) -> dict[str, Any]:
        return {"field": repr(point.attributes)}

    def transport(self, link: Any) -> LinkTransport:
        return AsciiTransport(link)

    def describe_link(self, link: Any) -> str:
        return f"{link.type} {link.device} {link.baudrate} {link.bytesize}{link.parity}{link.stopbits}"

    def address(self, device: Any) -> tuple[Any, str | None]:
        return ("" if device.address is None else str(device.address)), None

    async def transact(self, transport: LinkTransport, device: PolledDevice, request: Any) -> dict[str | int, str]:
        assert isinstance(transport, AsciiTransport)
        spec: LineSpec = device.resolved.profile.line  # type: ignore[attr-defined]
        end = spec.terminator.encode("latin-1")
        limit = spec.max_length + len(end) + 8

        def one_line(buf: bytearray) -> int | None:
            at = buf.find(end)
            if at >= 0:
                return at + len(end)
            if len(buf) > limit:
                return len(buf)  # no terminator where there should be one: hand it over to be refused
            return None

        opened_now = not transport.connected
        await transport.open()
        if spec.request is not None:
            transport.discard()
            try:
                ask = spec.request.format(address=device.protocol_state).encode("latin-1")
            except (KeyError, IndexError, ValueError) as exc:
                raise DeviceRefused("bad_request", f"the profile's request cannot be filled in: {exc}") from None
            transport.send(ask)
            raw = await transport.receive(
                one_line, device.timeout, "line", first=device.timeout + len(ask) * transport.char
            )
            return self._fields(spec, raw, limit)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + device.timeout
        whole = self._drop_stale(transport, end) and not opened_now
        failure: LineError | None = None
        for _ in range(STREAM_TRIES + (0 if whole else 1)):
            left = deadline - loop.time()
            if left <= 0:
                break
            raw = await transport.receive(one_line, left, "line")
            if not whole:
                whole = True  # the first bytes after a drop may be the tail of a line: not a line
                continue
            try:
                return self._fields(spec, raw, limit)
            except LineError as exc:
                failure = exc
                transport.skipped += 1
        if failure is not None:
            raise failure
        raise Timeout(f"{transport.name}: no whole line within {device.timeout:g}s")

    @staticmethod
    def _drop_stale(line: AsciiTransport, end: bytes) -> bool:
        """Drop the lines that streamed in since the last poll (the port is read all the time, so what is left
        after the last terminator is the start of the line now coming); False when nothing says where lines
        begin yet: then the first bytes may be the tail of a line."""
        last = line.buf.rfind(end)
        if last >= 0:
            del line.buf[: last + len(end)]
            return True
        return line.last_rx > 0

    @staticmethod
    def _fields(spec: LineSpec, raw: bytes, limit: int) -> dict[str | int, str]:
        if len(raw) >= limit and not raw.endswith(spec.terminator.encode("latin-1")):
            raise LineError("too_long", f"{len(raw)} bytes without the line terminator {spec.terminator!r}")
        return parse_line(spec, raw)

    def value_of(self, answer: Any, point: PointSpec) -> Value:
        return value_of(answer, point)

    def wire_time(self, link: Any, device: PolledDevice, request: Any) -> float | None:
        spec: LineSpec = device.resolved.profile.line  # type: ignore[attr-defined]
        if spec.request is None:
            return None  # the sensor decides when its lines come
        chars = len(spec.request) + (len(spec.format or "") or spec.max_length // 4) + len(spec.terminator)
        return chars * char_time(link.baudrate, link.parity, link.stopbits, link.bytesize)


def value_of(fields: dict[str | int, str], point: PointSpec) -> Value:
    place: FieldPlace = point.attributes
    if place.key not in fields:
        raise MissingField(f"the line has no {place!r}")
    return typed(point, fields[place.key])


class MissingField(PointValueError):
    @property
    def reason(self) -> str:
        return "missing_field"


__all__ = ["AsciiDriver"]

DRIVER = AsciiDriver()
register(DRIVER)
