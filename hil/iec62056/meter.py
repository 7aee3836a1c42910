"""An emulated IEC 62056-21 mode C meter on a `SerialBus`, driven by the same profile the gateway reads it with.

It answers a sign-on (its own address, or none) with its identification after its
reaction time (20 ms when the third letter of its manufacturer is lowercase, else
200 ms), takes the acknowledgement only after that same time has passed since its
identification (an early one is not heard, as on a real meter), switches to the
proposed speed, sends its readout and returns to 300 baud. A break puts it back in its
initial state at once; 1.5 s of silence does too.

Faults: `silent` (never answers), `wrong_bcc`, `refuse_baud` (acknowledges the switch
and stays at 300), `partial` (the readout stops after that many bytes), `slow` (extra
reaction time), `garbage` (noise before the identification).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from gateway.points.types import DataType, Value
from gateway.points.units import convert
from gateway.profiles.expand import ResolvedProfile
from gateway.south.iec62056.profile import ObisPlace
from gateway.south.iec62056.telegram import (
    ACK,
    BAUD_C,
    BREAK,
    FAST_REACTION,
    REACTION,
    build_readout,
    parse_identification,
)
from hil.ptyline import PtyLine
from hil.serialbus import Reply

INACTIVITY = 1.5  # seconds of silence after which a meter forgets a session


@dataclass
class MeterFaults:
    silent: bool = False
    wrong_bcc: bool = False
    refuse_baud: bool = False
    partial: int = 0
    slow: float = 0.0
    garbage: bool = False

    def update(self, changes: dict[str, Any]) -> None:
        known = {f.name: f.type for f in fields(self)}
        for key in changes:
            if key not in known:
                raise ValueError(f"unknown meter fault {key!r}; expected one of {', '.join(known)}")
        for key, value in changes.items():
            current = getattr(self, key)
            setattr(self, key, type(current)(value))


@dataclass
class MeterStats:
    sign_ons: int = 0
    readouts: int = 0
    early_acks: int = 0  # acknowledgements that came before the reaction time: not heard
    breaks: int = 0
    bauds: list[int] | None = None  # the speed of every readout sent


class ModeCMeter:
    def __init__(
        self,
        profile: ResolvedProfile,
        line: PtyLine,
        *,
        address: str = "",
        identification: str | None = None,
        values: dict[str, Value] | None = None,
        units: dict[str, str] | None = None,
    ) -> None:
        self.profile, self.line, self.address = profile, line, address
        text = identification or getattr(profile.profile, "identification", None) or "/XYZ5EMULATED"
        self.identification = parse_identification(text.encode("latin-1") + b"\r\n")
        self.ident_bytes = text.encode("latin-1") + b"\r\n"
        self.faults = MeterFaults()
        self.stats = MeterStats(bauds=[])
        self.units = dict(units or {})  # points the meter states in another unit (Wh for kWh)
        self.values: dict[str, Value] = {}
        for p in profile.points:
            start = p.initial if p.initial is not None else ("" if p.dtype is DataType.STRING else 0.0)
            self.values[p.name] = start
        self.values.update(values or {})
        self._buf = bytearray()
        self._identified_at: float | None = None  # when its identification was on the wire
        self._last = 0.0

    @property
    def reaction(self) -> float:
        return (FAST_REACTION if self.identification.fast else REACTION) + self.faults.slow

    def _arriving(self, message: bytes) -> float:
        """A message is heard when its last character is in. Without wire timing the line delivers it at once,
        so the meter waits out the time it would still be on the wire before its reaction time starts."""
        return 0.0 if self.line.wire_timing else len(message) * self.line.char

    def set_value(self, point: str, value: Value) -> None:
        if point not in self.values:
            raise KeyError(point)
        self.values[point] = value

    def readout_lines(self) -> list[str]:
        sets: dict[str, dict[int, str]] = {}
        for p in self.profile.points:
            place: ObisPlace = p.attributes
            value = self.values[p.name]
            unit = self.units.get(p.name, p.unit)
            if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool)):
                number = float(value)
                if unit != p.unit and p.unit and unit:
                    number = convert(number, p.unit, unit)
                decimals = p.decimals if p.decimals is not None else 3
                text = f"{number:0{8 + decimals}.{decimals}f}" if p.dtype not in _WHOLE else f"{int(number):08d}"
            else:
                text = str(value)
            sets.setdefault(place.obis, {})[place.index] = f"{text}*{unit}" if unit else text
        lines = []
        for obis, values in sets.items():
            lines.append(obis + "".join(f"({values.get(i, '')})" for i in range(max(values) + 1)))
        return lines

    def telegram(self) -> bytes:
        return build_readout(self.readout_lines(), corrupt_bcc=self.faults.wrong_bcc)

    def feed(self, data: bytes, now: float) -> Sequence[Reply]:
        if now - self._last > INACTIVITY:
            self._buf.clear()
            self._identified_at = None
        self._last = now
        self._buf += bytes(b & 0x7F for b in data)
        replies: list[Reply] = []
        while True:
            if self._buf.startswith(BREAK[:1]) and BREAK in self._buf:
                del self._buf[: self._buf.find(BREAK) + len(BREAK)]
                self.stats.breaks += 1
                self._identified_at = None
                continue
            end = self._buf.find(b"\r\n")
            if end < 0:
                if len(self._buf) > 256:
                    self._buf.clear()
                return replies
            message = bytes(self._buf[: end + 2])
            del self._buf[: end + 2]
            reply = self._answer(message, now)
            if reply is not None:
                replies.append(reply)

    def _answer(self, message: bytes, now: float) -> Reply | None:
        if self.faults.silent:
            return None
        start = message.rfind(b"/?")
        if start >= 0 and message.endswith(b"!\r\n"):
            asked = message[start + 2 : -3].decode("latin-1")
            if asked not in ("", self.address):
                self._identified_at = None
                return None
            self.stats.sign_ons += 1
            delay = self.reaction + self._arriving(message)
            on_wire = len(self.ident_bytes) * self.line.char if self.line.wire_timing else 0.0
            self._identified_at = now + delay + on_wire
            noise = b"\x7f\x00\x13" if self.faults.garbage else b""
            return Reply(delay, noise + self.ident_bytes)
        ack = message.find(bytes([ACK]))
        if ack >= 0 and self._identified_at is not None and len(message) - ack == 6:
            if now + self._arriving(message) < self._identified_at + self.reaction - 0.005:
                self.stats.early_acks += 1
                return None
            char, mode = chr(message[ack + 2]), chr(message[ack + 3])
            self._identified_at = None
            if mode != "0" or char not in BAUD_C:
                return None
            speed = min(BAUD_C[char], self.identification.baud)
            if self.faults.refuse_baud:
                speed = 300
            data = self.telegram()
            if self.faults.partial:
                data = data[: self.faults.partial]
            self.stats.readouts += 1
            assert self.stats.bauds is not None
            self.stats.bauds.append(speed)
            return Reply(self.reaction + self._arriving(message), data, baud=speed, then_baud=300)
        return None


_WHOLE = frozenset({DataType.INT16, DataType.UINT16, DataType.INT32, DataType.UINT32, DataType.INT64, DataType.UINT64})
