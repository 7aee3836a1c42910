"""The first words of an ESP32's ROM bootloader on a pseudo-terminal, for testing what esptool runs into.

It answers esptool's SLIP protocol far enough for esptool to connect and identify the chip:
SYNC, READ_REG of the chip-magic register and GET_SECURITY_INFO (the chip id of newer chips).
Everything else is answered "unsupported", so esptool stops with its own error after
identification. That is enough to prove, against the real esptool, how `cityedge node flash`
explains a wrong chip; flashing itself needs a real board.
"""

from __future__ import annotations

import contextlib
import os
import select
import struct
import threading
import tty
from pathlib import Path

SYNC, READ_REG, GET_SECURITY_INFO = 0x08, 0x0A, 0x14
CHIP_MAGIC_REG = 0x40001000
# chip -> (magic value at CHIP_MAGIC_REG, chip id from GET_SECURITY_INFO or None when the ROM lacks it)
CHIPS = {
    "esp32": (0x00F01D83, None),
    "esp32s3": (0x9, 9),
    "esp32c3": (0x1B31506F, 5),
    "esp32c6": (0x2CE0806F, 13),
}
STATUS_OK, STATUS_UNSUPPORTED = b"\x00\x00\x00\x00", b"\x01\x05\x00\x00"


def slip(packet: bytes) -> bytes:
    return b"\xc0" + packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"


class EspRom:
    def __init__(self, link: Path, chip: str = "esp32") -> None:
        self.link = link
        self.magic, self.chip_id = CHIPS[chip]
        self.commands: list[int] = []  # every command received, in order
        self._master = self._slave = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        self.link.symlink_to(os.ttyname(self._slave))
        self._thread = threading.Thread(target=self._run, name="esprom", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()

    def _run(self) -> None:
        frame = bytearray()
        inside = False
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(self._master, 4096)
            except OSError:
                continue
            for byte in data:
                if byte == 0xC0:
                    if inside and frame:
                        self._packet(bytes(frame).replace(b"\xdb\xdc", b"\xc0").replace(b"\xdb\xdd", b"\xdb"))
                    frame.clear()
                    inside = True
                elif inside:
                    frame.append(byte)

    def _packet(self, packet: bytes) -> None:
        if len(packet) < 8 or packet[0] != 0x00:
            return
        op, size = packet[1], struct.unpack_from("<H", packet, 2)[0]
        body = packet[8 : 8 + size]
        self.commands.append(op)
        if op == SYNC:
            for _ in range(8):  # the ROM answers a SYNC eight times
                self._answer(op, 0x20120707, STATUS_OK)
        elif op == READ_REG and len(body) == 4:
            address = struct.unpack("<I", body)[0]
            self._answer(op, self.magic if address == CHIP_MAGIC_REG else 0, STATUS_OK)
        elif op == GET_SECURITY_INFO and self.chip_id is not None:
            info = struct.pack("<IB7BII", 0, 0, *([0] * 7), self.chip_id, 0)
            self._answer(op, 0, info + STATUS_OK)
        else:
            self._answer(op, 0, STATUS_UNSUPPORTED)

    def _answer(self, op: int, value: int, data: bytes) -> None:
        with contextlib.suppress(OSError):
            os.write(self._master, slip(struct.pack("<BBHI", 0x01, op, len(data), value) + data))
