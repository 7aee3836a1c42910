"""RTU and MBAP framing for a master: wrap requests, and find the answer in whatever bytes arrive.

Finding the answer is where real buses get ugly. The RTU framer looks for a frame
from the right unit, with the right function and length and a valid CRC, anywhere in
the buffer, so garbage before the answer costs nothing; when no such frame comes it
says why: a frame with a bad CRC, an answer from another unit, or bytes that were
never a frame at all.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from gateway.south.modbus.errors import CrcError, FrameError, ModbusTimeout, TransactionError

_CRC_TABLE: list[int] = []
for _byte in range(256):
    _crc = _byte
    for _ in range(8):
        _crc = (_crc >> 1) ^ 0xA001 if _crc & 1 else _crc >> 1
    _CRC_TABLE.append(_crc)


def crc16(data: bytes | bytearray | memoryview) -> int:
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


@dataclass(slots=True)
class Found:
    """Outcome of scanning the receive buffer."""

    pdu: bytes | None = None  # the answer, when found
    end: int = 0  # bytes of the buffer it used (garbage before it included)
    noise: int = 0  # garbage bytes skipped before the answer
    suspect: TransactionError | None = None  # why there is no answer yet, if nothing better comes
    settled: bool = False  # the suspect is a whole frame (bad CRC, wrong unit): no point waiting long
    dead: int = 0  # leading bytes that can never be (part of) the answer: the caller may drop them


class RtuFramer:
    """Modbus RTU: [unit][pdu][crc lo][crc hi]."""

    def build(self, unit: int, pdu: bytes, tid: int = 0) -> bytes:
        body = bytes([unit]) + pdu
        crc = crc16(body)
        return body + bytes((crc & 0xFF, crc >> 8))  # CRC low byte first

    def scan(self, buf: bytearray, unit: int, function: int, normal_len: int, tid: int = 0) -> Found:
        """Find the answer anywhere in `buf`, jumping from one function code to the next (C-speed `find`)."""
        suspect: TransactionError | None = None
        settled = False
        size = len(buf)
        keep = max(0, size - 1)  # the last byte may be the unit address of an answer still arriving
        codes = (bytes([function]), bytes([function | 0x80]))
        ahead = [buf.find(codes[0], 1), buf.find(codes[1], 1)]
        while True:
            which = 0 if ahead[1] < 0 or 0 <= ahead[0] < ahead[1] else 1
            j = ahead[which]
            if j < 0:
                break
            ahead[which] = buf.find(codes[which], j + 1)
            i = j - 1
            if which == 0:
                length = normal_len + 3
                if function <= 4 and size > j + 1 and buf[j + 1] != normal_len - 2:
                    continue  # the byte count does not fit: not our answer
            else:
                length = 5
            if i + length > size:  # incomplete: it may still become our answer
                keep = min(keep, i)
                if suspect is None and buf[i] == unit:
                    suspect = FrameError(f"incomplete answer: {size - i} of {length} bytes")
                continue
            frame = buf[i : i + length]
            if crc16(frame[:-2]) != frame[-2] | (frame[-1] << 8):
                suspect, settled = CrcError(f"CRC error in a {length}-byte answer"), True
                continue
            if buf[i] != unit:
                suspect, settled = FrameError(f"answer from unit {buf[i]} instead of {unit}"), True
                continue
            return Found(bytes(frame[1:-2]), i + length, i)
        if suspect is None and size:
            suspect = FrameError(f"{size} bytes that are not an answer")
        return Found(suspect=suspect, settled=settled, dead=keep)


_MBAP = struct.Struct(">HHHB")


class MbapFramer:
    """Modbus TCP: [transaction][protocol 0][length][unit][pdu]."""

    def build(self, unit: int, pdu: bytes, tid: int = 0) -> bytes:
        return _MBAP.pack(tid, 0, len(pdu) + 1, unit) + pdu

    def scan(self, buf: bytearray, unit: int, function: int, normal_len: int, tid: int = 0) -> Found:
        start = 0
        while len(buf) - start >= 7:
            rtid, protocol, length, runit = _MBAP.unpack_from(buf, start)
            if protocol != 0 or not 2 <= length <= 254:
                bad = FrameError(f"bad MBAP header (protocol {protocol}, length {length})")
                return Found(end=len(buf), suspect=bad, settled=True)
            end = start + 6 + length
            if end > len(buf):
                return Found(suspect=FrameError(f"incomplete answer: {len(buf) - start} of {6 + length} bytes"))
            if rtid != tid:
                start = end  # a late answer to an earlier request: skip it
                continue
            if runit != unit:
                return Found(end=end, suspect=FrameError(f"answer from unit {runit} instead of {unit}"), settled=True)
            return Found(bytes(buf[start + 7 : end]), end, 0)
        return Found(end=start, suspect=FrameError("incomplete MBAP header") if len(buf) > start else None)


def final_error(found: Found) -> TransactionError:
    """What to report when the time is up."""
    return found.suspect or ModbusTimeout("no answer")
