"""An emulated wired M-Bus meter on a `SerialBus`, built from the profile the gateway reads it with.

It answers SND_NKE to its primary address with E5, a selection (SND_UD to 0xFD, CI 0x52)
that matches its secondary address with E5 (and is deselected by one that does not), and
REQ_UD2 with RSP_UD: its points as variable data records, split over `per_telegram`
records per telegram with DIF 0x1F when more follow. The frame count bit works as
EN 13757-2 says: the same FCB again repeats the last telegram, a toggled one moves on,
SND_NKE or a selection starts over at the first.

Faults: `silent`, `wrong_checksum`, `delay` (extra seconds before answers), `garbage`
(noise before each answer), `no_records` (an empty RSP_UD).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from gateway.points.types import DataType, Value
from gateway.points.units import convert
from gateway.profiles.expand import ResolvedProfile
from gateway.south.mbus import frame
from gateway.south.mbus.profile import RecordPlace
from gateway.south.mbus.records import UNIT_OF, encode_record, header_bytes, manufacturer_value
from hil.ptyline import PtyLine
from hil.serialbus import Reply

EXPONENTS = {"energy": 3, "volume": -3, "power": 0, "volume_flow": -3, "mass": 0, "mass_flow": 0, "pressure": -2}
EXPONENTS.update(dict.fromkeys(("flow_temperature", "return_temperature", "external_temperature"), -2))
EXPONENTS["temperature_difference"] = -2
REACTION_BITS = (
    11  # EN 13757-2: a meter answers 11 bit times to 330 bit times + 50 ms after a request; emulated: at once
)


@dataclass
class MbusFaults:
    silent: bool = False
    wrong_checksum: bool = False
    delay: float = 0.0
    garbage: bool = False
    no_records: bool = False

    def update(self, changes: dict[str, Any]) -> None:
        known = {f.name for f in fields(self)}
        for key in changes:
            if key not in known:
                raise ValueError(f"unknown M-Bus fault {key!r}; expected one of {', '.join(sorted(known))}")
        for key, value in changes.items():
            setattr(self, key, type(getattr(self, key))(value))


@dataclass
class MbusStats:
    nke: int = 0
    selections: int = 0
    requests: int = 0
    repeats: int = 0  # REQ_UD2 with the same FCB: the last telegram again


class MbusMeter:
    def __init__(
        self,
        profile: ResolvedProfile,
        line: PtyLine,
        *,
        primary: int | None = None,
        ident: str = "00000001",
        manufacturer: str | None = None,
        version: int | None = None,
        medium: int | None = None,
        values: dict[str, Value] | None = None,
        per_telegram: int = 0,
    ) -> None:
        meter = getattr(profile.profile, "meter", None)
        self.profile, self.line, self.primary, self.ident = profile, line, primary, ident
        self.manufacturer = manufacturer or (meter.manufacturer if meter else "CEE")
        self.version = version if version is not None else (meter.version if meter else 0)
        self.medium = medium if medium is not None else (meter.medium if meter else 7)
        self.per_telegram = per_telegram
        self.faults = MbusFaults()
        self.stats = MbusStats()
        self.values: dict[str, Value] = {}
        for p in profile.points:
            place: RecordPlace = p.attributes
            if place.header is None and not place.modifier:
                self.values[p.name] = (
                    p.initial
                    if p.initial is not None
                    else ("2026-01-01T00:00" if place.quantity == "date_time" else 0.0)
                )
        self.values.update(values or {})
        self.selected = False
        self.access = 0
        self._last_fcb: bool | None = None
        self._telegram = 0
        self._buf = bytearray()

    @property
    def secondary(self) -> str:
        return f"{self.ident}.{self.manufacturer}.{self.version:02X}.{self.medium:02X}"

    def _records(self) -> list[bytes]:
        out = []
        for p in self.profile.points:
            if p.name not in self.values:
                continue
            place: RecordPlace = p.attributes
            assert place.quantity is not None
            value = self.values[p.name]
            if place.quantity == "fabrication_number":
                out.append(encode_record("fabrication_number", int(value), coding=0x0C))
                continue
            if place.quantity == "date_time":
                out.append(encode_record("date_time", str(value), storage=place.storage))
                continue
            if isinstance(value, str) or p.dtype is DataType.STRING:
                continue
            base = UNIT_OF.get(place.quantity)
            number = float(value)
            if base and p.unit:
                number = convert(number, p.unit, base)
            out.append(
                encode_record(
                    place.quantity,
                    number,
                    exponent=EXPONENTS.get(place.quantity, 0),
                    function=place.function,
                    storage=place.storage,
                    tariff=place.tariff,
                    subunit=place.subunit,
                )
            )
        return out

    def telegrams(self) -> list[bytes]:
        records = [] if self.faults.no_records else self._records()
        size = self.per_telegram or max(1, len(records))
        chunks = [records[i : i + size] for i in range(0, len(records), size)] or [[]]
        return [b"".join(chunk) + (b"\x1f" if i < len(chunks) - 1 else b"") for i, chunk in enumerate(chunks)]

    def _rsp_ud(self, index: int) -> bytes:
        self.access = (self.access + 1) & 0xFF
        body = self.telegrams()[index]
        data = header_bytes(self.ident, self.manufacturer, self.version, self.medium, self.access) + body
        raw = bytearray(frame.long(frame.RSP_UD, self.primary if self.primary is not None else 0, 0x72, data))
        if self.faults.wrong_checksum:
            raw[-2] ^= 0x55
        return (b"\x00\x7f" if self.faults.garbage else b"") + bytes(raw)

    def _matches(self, data: bytes) -> bool:
        if len(data) != 8:
            return False
        wanted = data[3::-1].hex().upper()
        if any(w not in ("F", mine) for w, mine in zip(wanted, self.ident, strict=True)):
            return False
        man = int.from_bytes(data[4:6], "little")
        return (
            man in (0xFFFF, manufacturer_value(self.manufacturer))
            and data[6] in (0xFF, self.version)
            and data[7] in (0xFF, self.medium)
        )

    def _addressed(self, a: int) -> bool:
        return (
            (a == frame.SELECTED and self.selected)
            or (self.primary is not None and a == self.primary)
            or (a == frame.NETWORK)
        )

    def feed(self, data: bytes, now: float) -> Sequence[Reply]:
        self._buf += data
        replies: list[Reply] = []
        while True:
            end = frame.frame_end(self._buf)
            if end is None:
                if len(self._buf) > 600:
                    self._buf.clear()
                return replies
            raw = bytes(self._buf[:end])
            del self._buf[:end]
            try:
                request = frame.parse(raw)
            except frame.FrameError:
                continue
            reply = self._answer(request)
            if reply is not None and not self.faults.silent:
                reaction = REACTION_BITS / self.line.baudrate
                replies.append(Reply(reaction + self.faults.delay + len(raw) * self._heard, reply))

    @property
    def _heard(self) -> float:
        return 0.0 if self.line.wire_timing else self.line.char

    def _answer(self, request: frame.Frame) -> bytes | None:
        if request.kind == "long" and request.a == frame.SELECTED and request.ci == frame.CI_SELECT:
            self.selected = self._matches(request.data)
            if self.selected:
                self.stats.selections += 1
                self._last_fcb, self._telegram = None, 0
                return bytes([frame.ACK])
            return None
        if request.kind != "short" or not self._addressed(request.a):
            return None
        if request.c == frame.SND_NKE:
            self.stats.nke += 1
            self._last_fcb, self._telegram = None, 0
            if request.a == frame.SELECTED:
                self.selected = False
            return bytes([frame.ACK])
        if request.c & ~frame.FCB == frame.REQ_UD2:
            self.stats.requests += 1
            fcb = bool(request.c & frame.FCB)
            count = len(self.telegrams())
            if self._last_fcb is None:
                self._telegram = 0
            elif fcb != self._last_fcb:
                self._telegram = (self._telegram + 1) % count
            else:
                self.stats.repeats += 1
            self._last_fcb = fcb
            return self._rsp_ud(min(self._telegram, count - 1))
        return None
