"""The IEC 62056-21 driver: mode C data readout of electricity meters, one whole readout per poll.

One poll is one session (`telegram.py` has the messages): sign-on at 300 baud, the
meter's identification, the gateway's acknowledgement proposing the highest speed the
meter, the link and the profile all allow, both sides switching, the readout with its
BCC checked, and back to 300. The gateway keeps the minimum reaction time the meter
announces (20 ms when the third letter of its manufacturer is lowercase, 200 ms
otherwise) before it answers.

A damaged readout (wrong BCC, cut off) ends the session with a break and starts a new
one, `retries` times per poll. A meter that answers its sign-on but never gives a
readout at the switched speed is tried once at 300 baud in the same poll; when that
works in two polls in a row the driver keeps reading it at 300 and says so in the device's health
(`learned.baud_switch`), with the profile setting that makes it start that way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gateway.points.types import DataType, PointValueError, Value
from gateway.profiles.expand import PointSpec
from gateway.profiles.model import Profile
from gateway.south.driver import (
    LinkTransport,
    PolledDevice,
    Report,
    Timeout,
    TransactionError,
    register,
)
from gateway.south.iec62056.links import Iec62056Link
from gateway.south.iec62056.profile import OBIS, TYPES, IecLimits, IecPoint, IecProfile, ObisPlace
from gateway.south.iec62056.telegram import (
    ADDRESS,
    BAUD_C,
    BREAK,
    REACTION,
    Identification,
    Readout,
    TelegramError,
    ack_option,
    line_end,
    parse_identification,
    parse_readout,
    readout_end,
    sign_on,
)
from gateway.south.serialline import SerialLine, char_time
from gateway.south.values import typed
from gateway.south.wholeread import WholeReadDriver

log = logging.getLogger("cityedge.iec62056")
IDENT_CHARS = 20  # a typical identification line, for the plan's wire time
LEARN_AFTER = 2  # polls in a row read only at the sign-on speed before the driver keeps to it


@dataclass(slots=True)
class IecState:
    address: str
    stay: bool = False  # learned: this meter is read at the sign-on speed
    fallbacks: int = 0  # polls in a row that needed the sign-on speed after the switched one failed
    identification: Identification | None = None
    last: dict[str, Any] = field(default_factory=dict)  # the last readout: baud, seconds, chars
    stage: str = ""  # how far the current session got: identification, readout


class IecTransport(SerialLine):
    def __init__(self, link: Iec62056Link) -> None:
        super().__init__(link.id, link.port())
        self.link = link


class Iec62056Driver(WholeReadDriver):
    name: ClassVar[str] = "iec62056"
    read_only: ClassVar[str] = "IEC 62056-21 data readout is read-only"
    profile_model = IecProfile
    point_fields = IecPoint
    link_models = (Iec62056Link,)
    types = TYPES

    # -- profiles -----------------------------------------------------------------------------------

    def default_type(self, fields: Mapping[str, Any]) -> DataType:
        return DataType.FLOAT64

    def attributes(self, profile: Profile, name: str, fields: dict[str, Any], base: int, bad: Report) -> Any:
        obis = fields.get("obis")
        if obis is None:
            bad(None, "missing required key 'obis' (the data set's address in the readout, e.g. 1.8.0)")
            return None
        if not OBIS.match(obis):
            bad("obis", f"{obis!r} is not a data set address (digits, letters and . : * & -, up to 32)")
            return None
        if fields.get("access", "r") != "r":
            bad("access", "an IEC 62056-21 data readout is read-only: access must be r")
            return None
        return ObisPlace(obis, fields.get("index") or 0)

    def summary(self, profile: Any) -> list[str]:
        limits: IecLimits = profile.limits
        offered = 19200
        if getattr(profile, "identification", None):
            offered = BAUD_C.get(profile.identification[4], 19200)
        speed = (
            "stays at 300 baud"
            if not limits.baud_switch
            else f"up to {min(limits.max_baudrate or 19200, offered)} baud"
        )
        return [f"mode C data readout, {speed}, about {limits.readout_chars} characters"]

    def columns(self, profile: Any, point: PointSpec) -> dict[str, Any]:
        place: ObisPlace = point.attributes
        return {"obis": place.obis, "index": place.index or ""}

    # -- links and devices ----------------------------------------------------------------------------

    def transport(self, link: Any) -> LinkTransport:
        return IecTransport(link)

    def describe_link(self, link: Any) -> str:
        framing = f"{link.bytesize}{link.parity}{link.stopbits}"
        return f"{link.type} {link.device} {link.baudrate} {framing}, up to {link.max_baudrate}"

    def address(self, device: Any) -> tuple[Any, str | None]:
        address = "" if device.address is None else str(device.address)
        if not ADDRESS.match(address):
            return None, f"address {address!r} is not a meter address (up to 32 digits, letters or spaces)"
        return address, None

    def prepare(self, device: PolledDevice, address: Any) -> IecState:
        return IecState(address)

    def carry_over(self, device: PolledDevice, before: Any) -> None:
        if isinstance(before, IecState) and before.stay:
            device.protocol_state.stay = True
            device.learned["baud_switch"] = {"value": False, "why": "learned before the link restarted"}

    async def transact(self, transport: LinkTransport, device: PolledDevice, request: Any) -> Readout:
        assert isinstance(transport, IecTransport)
        link, state = transport.link, device.protocol_state
        assert isinstance(state, IecState)
        tries = 1 + link.retries
        failure: TransactionError | None = None
        attempt = 0
        fallback = False  # this poll: one try at the sign-on speed after a switched one failed
        while attempt < tries:
            attempt += 1
            stay = state.stay or fallback
            try:
                readout = await self._session(transport, device, state, stay)
            except TransactionError as exc:
                failure = exc
                await self._abort(transport)
                switched = state.identification is not None and self._speed(link, device, state, stay) != link.baudrate
                readable = isinstance(exc, TelegramError) and exc.reason == "bcc"  # the speed worked, the data did not
                if state.stage == "readout" and switched and not fallback and not readable:
                    fallback, attempt = True, attempt - 1  # the fallback try is not a retry
                    continue
                if isinstance(exc, Timeout) or not exc.corrupt:
                    break
                continue
            if fallback and not state.stay:
                state.fallbacks += 1
                if state.fallbacks >= LEARN_AFTER:
                    self._learn(device, state, failure)
            elif not fallback:
                state.fallbacks = 0
            return readout
        assert failure is not None
        raise failure

    async def _session(self, line: IecTransport, device: PolledDevice, state: IecState, stay: bool) -> Readout:
        link = line.link
        loop = asyncio.get_running_loop()
        await line.open()
        line.set_baudrate(link.baudrate)
        line.discard()
        started = loop.time()
        request = sign_on(state.address)
        state.stage = "identification"
        line.send(request)
        answer = await line.receive(
            line_end, device.timeout, "identification", first=len(request) * line.char + device.timeout
        )
        ident = state.identification = parse_identification(answer)
        heard = line.last_rx
        speed = self._speed(link, device, state, stay, ident)
        wait = heard + ident.reaction - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        ack = ack_option(speed)
        line.send(ack)
        await line.sent(len(ack))
        state.stage = "readout"
        line.set_baudrate(speed)
        try:
            frame = await line.receive(readout_end, device.timeout, "data readout", first=device.timeout + REACTION)
            readout = parse_readout(frame)
        finally:
            line.set_baudrate(link.baudrate)
        line.noise_bytes += readout.noise
        state.last = {"baud": speed, "seconds": round(loop.time() - started, 3), "chars": readout.chars}
        device.learned["readout"] = dict(state.last)
        return readout

    def _speed(
        self,
        link: Iec62056Link,
        device: PolledDevice,
        state: IecState,
        stay: bool,
        ident: Identification | None = None,
    ) -> int:
        limits: IecLimits = device.resolved.limits
        ident = ident or state.identification
        if stay or not limits.baud_switch or ident is None:
            return link.baudrate
        return max(link.baudrate, min(ident.baud, link.max_baudrate, limits.max_baudrate or 19200))

    async def _abort(self, line: IecTransport) -> None:
        """A break, then the silence that lets the meter give up on the session."""
        if line.connected:
            line.set_baudrate(line.link.baudrate)
            line.send(BREAK)
            await line.sent(len(BREAK))
        await asyncio.sleep(line.link.recovery)
        line.discard()

    def _learn(self, device: PolledDevice, state: IecState, failure: TransactionError | None) -> None:
        state.stay = True
        why = f"no readout after the speed switch ({failure}); readouts at the sign-on speed work"
        device.learned["baud_switch"] = {"value": False, "profile": device.resolved.profile.name, "why": why}
        log.warning(
            "%s: reads at the sign-on speed from now on (%s); set limits.baud_switch: false in profile %s",
            device.id,
            why,
            device.resolved.profile.name,
        )

    def value_of(self, answer: Any, point: PointSpec) -> Value:
        return value_of(answer, point)

    def describe_request(self, device: Any, request: Any) -> dict[str, Any]:
        """The readout's size, and how long a session takes at each speed up to the one the meter offers (so a
        meter that falls back to 300 baud is no surprise)."""
        limits: IecLimits = device.resolved.limits
        state: IecState = device.protocol_state
        ident = state.identification or _expected(device.resolved.profile)
        sign = len(sign_on(state.address))
        seconds = {
            str(baud): round(session_time(sign, limits.readout_chars, 300, baud, reaction=ident.reaction), 3)
            for baud in sorted(BAUD_C.values())
            if baud <= ident.baud
        }
        return {"readout": limits.readout_chars, "seconds_at_baud": seconds, "points": list(request.point_names)}

    def wire_time(self, link: Any, device: PolledDevice, request: Any) -> float | None:
        """A whole session: sign-on, identification and acknowledgement at the sign-on speed, three reaction
        times, and the readout at the speed the meter is expected to switch to."""
        state: IecState = device.protocol_state
        limits: IecLimits = device.resolved.limits
        ident = state.identification or _expected(device.resolved.profile)
        return session_time(
            len(sign_on(state.address)),
            limits.readout_chars,
            link.baudrate,
            self._speed(link, device, state, state.stay, ident),
            link.parity,
            link.bytesize,
            ident.reaction,
        )

    def plan_columns(self) -> tuple[str, ...]:
        return ("readout",)

    def plan_cell(self, column: str, value: Any) -> str:
        return f"{value} chars"


_ASSUMED = Identification("XXX", 19200, "", False)


def _expected(profile: Any) -> Identification:
    """The identification the profile says its meters send (for planning before any was heard)."""
    text = getattr(profile, "identification", None)
    if text:
        try:
            return parse_identification(text.encode("latin-1") + b"\r\n")
        except TelegramError:
            pass
    return _ASSUMED


def session_time(
    sign_on_chars: int,
    readout_chars: int,
    baudrate: int,
    speed: int,
    parity: str = "E",
    bytesize: int = 7,
    reaction: float = REACTION,
) -> float:
    """Wire time of one mode C session: what the line allows, whoever is asked."""
    slow = char_time(baudrate, parity, 1, bytesize)
    fast = char_time(speed, parity, 1, bytesize)
    return (sign_on_chars + IDENT_CHARS + 6) * slow + 3 * reaction + readout_chars * fast


def value_of(readout: Readout, point: PointSpec) -> Value:
    place: ObisPlace = point.attributes
    items = readout.find(place.obis)
    if items is None:
        raise NotInReadout(f"{place.obis} is not in the readout")
    if place.index >= len(items):
        raise NotInReadout(f"{place.obis} has {len(items)} value(s), not {place.index + 1}")
    item = items[place.index]
    return typed(point, item.value, item.unit)


class NotInReadout(PointValueError):
    @property
    def reason(self) -> str:
        return "not_in_readout"


__all__ = ["Iec62056Driver", "TelegramError", "session_time"]

DRIVER = Iec62056Driver()
register(DRIVER)
