"""IEC 62056-21 mode C messages: sign-on, identification, acknowledgement/option select, data readout, break.

    gateway -> meter   /?12345678!CR LF                 sign-on, 300 baud 7E1 (the address is optional)
    meter -> gateway   /ISk5MT174-0001 CR LF            identification: manufacturer, baud character, type
    gateway -> meter   ACK 0 5 0 CR LF                  normal protocol, 9600 baud, data readout
    meter -> gateway   STX data lines ! CR LF ETX BCC   at the new speed
    gateway -> meter   SOH B 0 ETX BCC                  break: back to the initial state at once

A data line holds one or more data sets `address(value*unit)`; a set without an address,
`(value)`, is one more value of the set before it (a maximum demand and its time stamp).
The block check character is the XOR of every byte after STX up to and including ETX.

Every way a telegram can be wrong is a `TelegramError` with a `reason` (bcc, framing,
identification, truncated): never an exception of another kind, never a wrong value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.south.driver import CorruptAnswer

SOH, STX, ETX, ACK, NAK = 0x01, 0x02, 0x03, 0x06, 0x15
CRLF = b"\r\n"
BAUD_C = {"0": 300, "1": 600, "2": 1200, "3": 2400, "4": 4800, "5": 9600, "6": 19200}  # mode C baud characters
CHAR_OF = {baud: char for char, baud in BAUD_C.items()}
REACTION, FAST_REACTION = 0.200, 0.020  # minimum reaction time; 20 ms when the 3rd letter is lowercase
ADDRESS = re.compile(r"^[0-9A-Za-z ]{0,32}$")  # device addresses are up to 32 digits, letters and spaces
MAX_LINE = 128  # characters of a data set's value in readout mode are far fewer
BREAK = bytes([SOH]) + b"B0" + bytes([ETX]) + bytes([ord("B") ^ ord("0") ^ ETX])


class TelegramError(CorruptAnswer):
    """A telegram that is not a good one; `reason` says how."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def bcc(data: bytes) -> int:
    value = 0
    for byte in data:
        value ^= byte
    return value


def sign_on(address: str = "") -> bytes:
    if not ADDRESS.match(address):
        raise ValueError(f"a device address is up to 32 digits, letters or spaces, not {address!r}")
    return b"/?" + address.encode("ascii") + b"!" + CRLF


def ack_option(baud: int, mode: str = "0") -> bytes:
    """Acknowledgement/option select: normal protocol (0), the baud character, data readout (0)."""
    return bytes([ACK]) + b"0" + CHAR_OF[baud].encode() + mode.encode() + CRLF


def line_end(buf: bytearray) -> int | None:
    """Scanner for one CR LF terminated line (the identification)."""
    at = buf.find(CRLF)
    return None if at < 0 else at + 2


def readout_end(buf: bytearray) -> int | None:
    """Scanner for a data readout: up to ETX and the BCC after it (whatever came before STX is skipped later)."""
    start = buf.find(bytes([STX]))
    if start < 0:
        return None
    at = buf.find(bytes([ETX]), start)
    return None if at < 0 or at + 1 >= len(buf) else at + 2


@dataclass(frozen=True, slots=True)
class Identification:
    manufacturer: str  # three letters, e.g. ISk (Iskraemeco), LGZ (Landis+Gyr)
    baud: int  # the highest speed the meter offers
    ident: str  # the type and version text after the baud character
    fast: bool  # third letter lowercase: the meter reacts within 20 ms

    @property
    def reaction(self) -> float:
        return FAST_REACTION if self.fast else REACTION


def parse_identification(line: bytes) -> Identification:
    """`/XXXZ<ident> CR LF`, with an optional `\\W` enhanced-identification escape before the ident."""
    text = line.decode("latin-1")
    if not text.endswith("\r\n"):
        raise TelegramError("truncated", f"identification without CR LF: {text!r}")
    body = text[:-2]
    if body.startswith("/?"):
        raise TelegramError("echo", "the sign-on came back: an echoing line or an optical head on the wrong side")
    start = body.rfind("/")
    if start < 0 or len(body) - start < 6:
        raise TelegramError("identification", f"not an identification message: {body!r}")
    body = body[start:]  # noise before the '/' is dropped
    maker, char, rest = body[1:4], body[4], body[5:]
    if not maker.isalpha() or not maker.isascii():
        raise TelegramError("identification", f"manufacturer {maker!r} is not three letters in {body!r}")
    if char not in BAUD_C:
        raise TelegramError("identification", f"baud character {char!r} is not mode C's 0-6 in {body!r}")
    if rest.startswith("\\") and len(rest) >= 2:
        rest = rest[2:]
    if not rest or any(not (0x20 <= ord(c) < 0x7F) for c in rest):
        raise TelegramError("identification", f"identification text {rest!r} is empty or not printable")
    return Identification(maker, BAUD_C[char], rest, maker[2].islower())


@dataclass(frozen=True, slots=True)
class Item:
    value: str
    unit: str | None


@dataclass(slots=True)
class Readout:
    """A whole data readout: every data set by address, in the order the meter sent them."""

    sets: dict[str, list[Item]] = field(default_factory=dict)
    chars: int = 0  # length of the telegram on the wire
    noise: int = 0  # bytes before STX

    def find(self, address: str) -> list[Item] | None:
        if address in self.sets:
            return self.sets[address]
        for raw, items in self.sets.items():
            if short(raw) == address:
                return items
        return None


def short(address: str) -> str:
    """`1-0:1.8.0*255` -> `1.8.0`: the OBIS C.D.E a profile names, without medium, channel and billing period."""
    if ":" in address:
        address = address.split(":", 1)[1]
    return address.split("*", 1)[0].split("&", 1)[0]


_SET = re.compile(rb"([^()]*)\(([^()]*)\)")


def parse_readout(frame: bytes) -> Readout:
    """STX data ! CR LF ETX BCC (noise before STX is counted and skipped), checked and parsed."""
    start = frame.find(bytes([STX]))
    if start < 0:
        raise TelegramError("framing", "no STX: not a data readout")
    end = frame.find(bytes([ETX]), start)
    if end < 0:
        raise TelegramError("truncated", f"readout without ETX after {len(frame) - start} bytes")
    if end + 1 >= len(frame):
        raise TelegramError("truncated", "readout ends before its block check character")
    body = frame[start + 1 : end]
    expected = bcc(frame[start + 1 : end + 1])
    if frame[end + 1] != expected:
        raise TelegramError("bcc", f"block check character {frame[end + 1]:#04x}, computed {expected:#04x}")
    if not body.endswith(b"!\r\n"):
        raise TelegramError("framing", "the data block does not end with '!' CR LF")
    readout = Readout(chars=end + 2 - start, noise=start)
    last: str | None = None
    for number, line in enumerate(body[:-3].split(CRLF), 1):
        if not line:
            continue
        at = 0
        for match in _SET.finditer(line):
            if match.start() != at:
                raise TelegramError("framing", f"line {number}: {line[at : match.start()]!r} is not a data set")
            at = match.end()
            name, inner = match.group(1).decode("latin-1"), match.group(2).decode("latin-1")
            if len(inner) > MAX_LINE or any(c in name for c in "/!") or not name.isprintable():
                raise TelegramError("framing", f"line {number}: {match.group(0)[:60]!r} is not a data set")
            value, _, unit = inner.partition("*")
            if name:
                last = name
                readout.sets.setdefault(name, [])
            elif last is None:
                raise TelegramError("framing", f"line {number}: a value with no address before it")
            readout.sets[last].append(Item(value, unit or None))
        if at != len(line):
            raise TelegramError("framing", f"line {number}: {line[at:][:60]!r} is not a data set")
    return readout


def build_readout(lines: list[str], *, corrupt_bcc: bool = False) -> bytes:
    """A readout telegram of these data lines (emulators and tests)."""
    body = "".join(line + "\r\n" for line in lines).encode("latin-1") + b"!\r\n" + bytes([ETX])
    check = bcc(body) ^ (0x01 if corrupt_bcc else 0)
    return bytes([STX]) + body + bytes([check])
