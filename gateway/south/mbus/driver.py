"""The wired M-Bus driver: water, heat and other meters behind a level converter, one read per poll.

A read (one `WholeRead` per poll) is: SND_NKE to the meter's primary address (or, for a secondary
address, a selection by identification, manufacturer, version and medium), then
REQ_UD2 with the frame count bit toggled after every answer, for as many telegrams as
the meter says follow (DIF 0x1F), up to the profile's `limits.telegrams`. A damaged
answer (checksum, a collision of two meters) is asked again with the *same* FCB, so the
meter repeats its telegram instead of sending the next; a meter that does not answer
costs its link one timeout.

Records are decoded by `records.py`; points pick theirs by quantity, function, storage,
tariff and subunit (`profile.py`), in the unit the profile asks for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gateway.points.types import DataType, PointValueError, Value
from gateway.profiles.expand import PointSpec
from gateway.profiles.model import Profile
from gateway.south.driver import (
    CorruptAnswer,
    LinkTransport,
    PolledDevice,
    Report,
    TransactionError,
    register,
)
from gateway.south.mbus import frame
from gateway.south.mbus.links import MbusLink
from gateway.south.mbus.profile import TYPES, MbusLimits, MbusPoint, MbusProfile, RecordPlace
from gateway.south.mbus.records import Header, Record, manufacturer_value, parse_rsp_ud
from gateway.south.serialline import SerialLine, char_time
from gateway.south.values import typed
from gateway.south.wholeread import WholeReadDriver

SECONDARY = re.compile(r"^(\d{8})(?:\.([A-Z@]{3})(?:\.([0-9A-Fa-f]{2})(?:\.([0-9A-Fa-f]{2}))?)?)?$")


@dataclass(frozen=True, slots=True)
class Address:
    primary: int | None = None
    ident: str | None = None  # secondary: 8 digits
    manufacturer: int = 0xFFFF
    version: int = 0xFF
    medium: int = 0xFF

    @property
    def target(self) -> int:
        return frame.SELECTED if self.primary is None else self.primary

    def __str__(self) -> str:
        if self.primary is not None:
            return str(self.primary)
        return str(self.ident)


def parse_address(value: Any) -> tuple[Address | None, str | None]:
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= 250:
            return Address(primary=value), None
        return None, f"primary address {value} is not 0-250"
    if isinstance(value, str):
        match = SECONDARY.match(value)
        if match:
            ident, man, version, medium = match.groups()
            return (
                Address(
                    ident=ident,
                    manufacturer=manufacturer_value(man) if man else 0xFFFF,
                    version=int(version, 16) if version else 0xFF,
                    medium=int(medium, 16) if medium else 0xFF,
                ),
                None,
            )
    return None, (
        f"address {value!r} is neither a primary address (0-250) nor a secondary one "
        "(8 digits, optionally .MAN.VV.MM as cityedge mbus scan lists it)"
    )


@dataclass(slots=True)
class Reading:
    """One read of a meter: its header and the records of every telegram."""

    header: Header | None
    records: list[Record] = field(default_factory=list)
    telegrams: int = 0


class MbusTransport(SerialLine):
    def __init__(self, link: MbusLink) -> None:
        super().__init__(link.id, link.port())
        self.link = link

    async def exchange(self, request: bytes, timeout: float, what: str) -> frame.Frame:
        """One request and its answer frame (checked); Timeout, or FrameError for a damaged one."""
        await self.open()
        self.discard()
        self.send(request)
        gap = max(0.02, 40 * self.char)  # a pause inside an answer this long ends it
        raw = await self.receive(frame.frame_end, gap, what, first=timeout + len(request) * self.char)
        found = frame.parse(raw)
        if self.buf:  # more bytes right behind the answer: a second one on top of it
            raise frame.FrameError("collision", f"{what}: {len(self.buf)} more bytes after the answer (a collision?)")
        return found


class MbusDriver(WholeReadDriver):
    name: ClassVar[str] = "mbus"
    read_only: ClassVar[str] = "M-Bus records are read-only"
    profile_model = MbusProfile
    point_fields = MbusPoint
    link_models = (MbusLink,)
    types = TYPES

    # -- profiles -----------------------------------------------------------------------------------

    def default_type(self, fields: Mapping[str, Any]) -> DataType:
        return DataType.STRING if fields.get("header") == "manufacturer" else DataType.FLOAT64

    def attributes(self, profile: Profile, name: str, fields: dict[str, Any], base: int, bad: Report) -> Any:
        if fields.get("access", "r") != "r":
            bad("access", "M-Bus meter records are read-only here: access must be r")
            return None
        quantity, header = fields.get("quantity"), fields.get("header")
        if (quantity is None) == (header is None):
            bad(None, "give either 'quantity' (a record) or 'header' (a header field), not both or neither")
            return None
        return RecordPlace(
            quantity,
            fields.get("function") or "instantaneous",
            fields.get("storage") or 0,
            fields.get("tariff") or 0,
            fields.get("subunit") or 0,
            fields.get("modifier") or "",
            fields.get("index") or 0,
            header,
        )

    def summary(self, profile: Any) -> list[str]:
        limits: MbusLimits = profile.limits
        meter = getattr(profile, "meter", None)
        who = f"{meter.manufacturer} version {meter.version} medium {meter.medium}, " if meter else ""
        return [f"{who}up to {limits.telegrams} telegram(s) per read, SND_NKE first: {limits.reset}"]

    def columns(self, profile: Any, point: PointSpec) -> dict[str, Any]:
        return {"record": repr(point.attributes)}

    # -- links and devices ----------------------------------------------------------------------------

    def transport(self, link: Any) -> LinkTransport:
        return MbusTransport(link)

    def describe_link(self, link: Any) -> str:
        return f"{link.type} {link.device} {link.baudrate} {link.bytesize}{link.parity}{link.stopbits}"

    def address(self, device: Any) -> tuple[Any, str | None]:
        if device.address is None:
            return None, "missing required key 'address' (primary 0-250, or the 8-digit secondary address)"
        return parse_address(device.address)

    async def transact(self, transport: LinkTransport, device: PolledDevice, request: Any) -> Reading:
        assert isinstance(transport, MbusTransport)
        address: Address = device.protocol_state
        limits: MbusLimits = device.resolved.limits
        link = transport.link
        if address.primary is None:
            assert address.ident is not None
            await self._ack(
                transport,
                device,
                frame.select(address.ident, address.manufacturer, address.version, address.medium),
                "selection",
            )
        elif limits.reset:
            await self._ack(transport, device, frame.snd_nke(address.primary), "SND_NKE")
        reading = Reading(None)
        fcb = True
        for _ in range(limits.telegrams):
            answer = await self._telegram(transport, device, address, fcb, link.retries)
            telegram = parse_rsp_ud(answer.ci or 0, answer.data)
            if telegram.header is not None:
                if address.ident is not None and telegram.header.ident != address.ident:
                    raise CorruptAnswer(f"{device.id}: answer from meter {telegram.header.ident}, not {address.ident}")
                reading.header = reading.header or telegram.header
            reading.records += telegram.records
            reading.telegrams += 1
            fcb = not fcb
            if not telegram.more:
                break
        if reading.header is not None:
            device.learned["meter"] = {"secondary": reading.header.secondary, "medium": reading.header.medium_name}
        device.learned["telegrams"] = reading.telegrams
        return reading

    async def _ack(self, line: MbusTransport, device: PolledDevice, request: bytes, what: str) -> None:
        for attempt in range(1 + line.link.retries):
            try:
                answer = await line.exchange(request, device.timeout, f"answer to {what}")
            except TransactionError as exc:
                if not exc.corrupt or attempt == line.link.retries:
                    raise
                continue
            if answer.kind != "ack":
                raise CorruptAnswer(f"{device.id}: {answer.kind} frame instead of the acknowledgement of {what}")
            return

    async def _telegram(
        self, line: MbusTransport, device: PolledDevice, address: Address, fcb: bool, retries: int
    ) -> frame.Frame:
        for attempt in range(1 + retries):
            try:
                answer = await line.exchange(frame.req_ud2(address.target, fcb), device.timeout, "RSP_UD")
            except TransactionError as exc:
                if not exc.corrupt or attempt == retries:
                    raise
                continue  # the same FCB: the meter sends the same telegram again
            if answer.kind != "long" or answer.c & 0x4F != frame.RSP_UD:
                raise CorruptAnswer(f"{device.id}: {answer.kind} frame (C={answer.c:#04x}) instead of RSP_UD")
            if address.primary is not None and answer.a != address.primary:
                raise CorruptAnswer(f"{device.id}: answer from primary address {answer.a}, not {address.primary}")
            return answer
        raise AssertionError("unreachable")

    def value_of(self, answer: Any, point: PointSpec) -> Value:
        return value_of(answer, point)

    def describe_request(self, device: Any, request: Any) -> dict[str, Any]:
        limits: MbusLimits = device.resolved.limits
        return {
            "address": str(device.protocol_state),
            "telegrams": limits.telegrams,
            "points": list(request.point_names),
        }

    def wire_time(self, link: Any, device: PolledDevice, request: Any) -> float | None:
        """SND_NKE and its E5 (or a selection), then REQ_UD2 and a telegram of `telegram_bytes`."""
        limits: MbusLimits = device.resolved.limits
        address: Address = device.protocol_state
        return cycle_time(link.baudrate, limits.telegram_bytes, secondary=address.primary is None, reset=limits.reset)

    def plan_columns(self) -> tuple[str, ...]:
        return ("address", "telegrams")


def cycle_time(baudrate: int, telegram_bytes: int, *, secondary: bool = False, reset: bool = True) -> float:
    """Bytes on the wire for one single-telegram read: what the line allows, whoever answers."""
    char = char_time(baudrate, "E", 1, 8)
    first = (17 + 1) if secondary else (5 + 1) if reset else 0  # selection (17) or SND_NKE (5), and E5
    return (first + 5 + telegram_bytes) * char


def value_of(reading: Reading, point: PointSpec) -> Value:
    place: RecordPlace = point.attributes
    if place.header is not None:
        if reading.header is None:
            raise NotInTelegram("the telegram has no header")
        value: Any = getattr(reading.header, place.header)
        return typed(point, value)
    found = [
        r
        for r in reading.records
        if r.quantity == place.quantity
        and r.function == place.function
        and r.storage == place.storage
        and r.tariff == place.tariff
        and r.subunit == place.subunit
        and r.modifier == place.modifier
    ]
    if len(found) <= place.index:
        raise NotInTelegram(f"no record {place!r} among {len(reading.records)}")
    record = found[place.index]
    if record.value is None:
        raise NotInTelegram(f"record {place!r} holds no value")
    return typed(point, record.value, record.unit or None)


class NotInTelegram(PointValueError):
    @property
    def reason(self) -> str:
        return "not_in_telegram"


__all__ = ["MbusDriver", "cycle_time", "parse_address"]

DRIVER = MbusDriver()
register(DRIVER)
