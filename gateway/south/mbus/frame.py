"""Wired M-Bus frames (EN 13757-2): the single character, the short frame and the long frame.

    E5                                   acknowledgement (a selected meter, an SND_NKE answered)
    10 C A CS 16                         short: SND_NKE (C=40), REQ_UD2 (C=5B/7B: the FCB is bit 5)
    68 L L 68 C A CI data.. CS 16        long: SND_UD (C=53/73), RSP_UD (C=08, with ACD/DFC bits)

CS is the sum of C, A, CI and the data, modulo 256; L counts C, A, CI and the data.
Address 0xFD is the selected meter (secondary addressing), 0xFE every meter, 0xFF broadcast.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.south.driver import CorruptAnswer

ACK = 0xE5
SHORT, LONG, STOP = 0x10, 0x68, 0x16
SND_NKE, REQ_UD2, SND_UD, RSP_UD = 0x40, 0x5B, 0x53, 0x08
FCB = 0x20
SELECTED, NETWORK, BROADCAST = 0xFD, 0xFE, 0xFF
CI_SELECT = 0x52
MAX_LONG = 6 + 255


class FrameError(CorruptAnswer):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Frame:
    kind: str  # ack | short | long
    c: int = 0
    a: int = 0
    ci: int | None = None
    data: bytes = b""


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def short(c: int, a: int) -> bytes:
    return bytes([SHORT, c, a, checksum(bytes([c, a])), STOP])


def long(c: int, a: int, ci: int, data: bytes) -> bytes:
    if len(data) > 252:
        raise ValueError(f"a long frame carries at most 252 bytes of data, not {len(data)}")
    body = bytes([c, a, ci]) + data
    return bytes([LONG, len(body), len(body), LONG]) + body + bytes([checksum(body), STOP])


def snd_nke(address: int) -> bytes:
    return short(SND_NKE, address)


def req_ud2(address: int, fcb: bool) -> bytes:
    return short(REQ_UD2 | (FCB if fcb else 0), address)


def frame_end(buf: bytearray) -> int | None:
    """Scanner: where the first frame in `buf` ends, skipping bytes that cannot start one (noise)."""
    start = 0
    while start < len(buf) and buf[start] not in (ACK, SHORT, LONG):
        start += 1
    if start == len(buf):
        return None
    first = buf[start]
    if first == ACK:
        return start + 1
    if first == SHORT:
        return start + 5 if len(buf) >= start + 5 else None
    if len(buf) < start + 4:
        return None
    length = buf[start + 1]
    if buf[start + 2] != length or buf[start + 3] != LONG or length < 3:
        return start + 4  # not a long frame's header: hand it to parse() to be classified
    end = start + 6 + length
    return end if len(buf) >= end else None


def parse(raw: bytes) -> Frame:
    """One frame (leading noise skipped), checked: start and stop, both lengths, the checksum."""
    start = 0
    while start < len(raw) and raw[start] not in (ACK, SHORT, LONG):
        start += 1
    frame = raw[start:]
    if not frame:
        raise FrameError("framing", f"no M-Bus frame in {len(raw)} bytes")
    if frame[0] == ACK:
        return Frame("ack")
    if frame[0] == SHORT:
        if len(frame) < 5:
            raise FrameError("truncated", f"short frame of {len(frame)} bytes")
        if frame[4] != STOP:
            raise FrameError("framing", f"short frame without its stop byte: {frame[:5].hex(' ')}")
        if checksum(frame[1:3]) != frame[3]:
            raise FrameError("checksum", f"short frame checksum {frame[3]:#04x}, computed {checksum(frame[1:3]):#04x}")
        return Frame("short", frame[1], frame[2])
    if len(frame) < 4:
        raise FrameError("truncated", "long frame header cut off")
    length = frame[1]
    if frame[2] != length or frame[3] != LONG:
        raise FrameError("framing", f"long frame header {frame[:4].hex(' ')}: the two lengths or starts differ")
    if length < 3:
        raise FrameError("framing", f"long frame of length {length}: shorter than C, A and CI")
    if len(frame) < 6 + length:
        raise FrameError("truncated", f"long frame of {len(frame)} bytes, its header says {6 + length}")
    body = frame[4 : 4 + length]
    if frame[4 + length] != checksum(body):
        raise FrameError("checksum", f"long frame checksum {frame[4 + length]:#04x}, computed {checksum(body):#04x}")
    if frame[5 + length] != STOP:
        raise FrameError("framing", "long frame without its stop byte")
    return Frame("long", body[0], body[1], body[2], bytes(body[3:]))


def select(ident: str, manufacturer: int = 0xFFFF, version: int = 0xFF, medium: int = 0xFF) -> bytes:
    """SND_UD to 0xFD selecting by secondary address; `ident` is 8 digits, F for a wildcard digit."""
    return long(SND_UD, SELECTED, CI_SELECT, secondary_bytes(ident, manufacturer, version, medium))


def secondary_bytes(ident: str, manufacturer: int, version: int, medium: int) -> bytes:
    if len(ident) != 8 or any(c not in "0123456789Ff" for c in ident):
        raise ValueError(f"a secondary address is 8 digits (F for any digit), not {ident!r}")
    packed = bytes.fromhex(ident)[::-1]  # BCD, least significant byte first
    return packed + manufacturer.to_bytes(2, "little") + bytes([version, medium])
