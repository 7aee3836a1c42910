"""An ESP32's serial bootloader (ROM, then esptool's flasher stub) with 4 MB of SPI flash, for testing flashing.

`EspRomProtocol` answers esptool's SLIP protocol as far as flashing needs: SYNC, register reads
and writes (chip magic, eFuses read as zero, the SPI flash ID), GET_SECURITY_INFO (chip id on
the chips that have it), RAM download of the stub (answered with the stub's "OHAI"), baud-rate
changes, erase, compressed and plain flash writes (really written into `flash`), and MD5 of a
flash region, which esptool uses to verify what it wrote. It is transport-free: `feed()` takes
bytes from the host and returns the bytes to send back.

`EspRom` puts it alone on a pseudo-terminal (a board held in download mode); `hil/esp32/emulated_board.py`
embeds it in the emulated board, which enters download mode when esptool syncs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import struct
import threading
import zlib
from pathlib import Path

from esptool.targets import CHIP_DEFS

from hil.ptyline import raw_port

SYNC, WRITE_REG, READ_REG, GET_SECURITY_INFO = 0x08, 0x09, 0x0A, 0x14
FLASH_BEGIN, FLASH_DATA, FLASH_END = 0x02, 0x03, 0x04
MEM_BEGIN, MEM_END, MEM_DATA = 0x05, 0x06, 0x07
SPI_SET_PARAMS, SPI_ATTACH, CHANGE_BAUDRATE = 0x0B, 0x0D, 0x0F
FLASH_DEFL_BEGIN, FLASH_DEFL_DATA, FLASH_DEFL_END, SPI_FLASH_MD5 = 0x10, 0x11, 0x12, 0x13
ERASE_FLASH, ERASE_REGION = 0xD0, 0xD1
CHIP_MAGIC_REG = 0x40001000
SPI_CMD_USR = 1 << 18
SPIFLASH_RDID = 0x9F
FLASH_ID = 0x164020  # XMC, 4 MB
FLASH_SIZE = 4 * 1024 * 1024
UNSUPPORTED = b"\x01\x05"


def slip(packet: bytes) -> bytes:
    return b"\xc0" + packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"


class EspRomProtocol:
    def __init__(self, chip: str = "esp32", flash: bytearray | None = None) -> None:
        self.chip = CHIP_DEFS[chip]
        self.flash = flash if flash is not None else bytearray(b"\xff" * FLASH_SIZE)
        self.commands: list[int] = []  # every command received, in order
        self.stub = False  # esptool's flasher stub "runs" once uploaded
        self.registers: dict[int, int] = {}
        self.writes = 0  # completed flash writes (begin ... end or the last block)
        self.erased = False
        self._frame = bytearray()
        self._inside = False
        self._write_at = 0
        self._inflate: zlib._Decompress | None = None

    # -- SLIP framing --------------------------------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            if byte == 0xC0:
                if self._inside and self._frame:
                    packet = bytes(self._frame).replace(b"\xdb\xdc", b"\xc0").replace(b"\xdb\xdd", b"\xdb")
                    out += self._packet(packet)
                self._frame.clear()
                self._inside = True
            elif self._inside:
                self._frame.append(byte)
        return bytes(out)

    def _answer(self, op: int, value: int = 0, data: bytes = b"", status: bytes = b"\x00\x00") -> bytes:
        body = data + status + (b"" if self.stub else b"\x00\x00")  # the ROM adds two reserved bytes
        return slip(struct.pack("<BBHI", 0x01, op, len(body), value) + body)

    # -- commands ------------------------------------------------------------------------------------

    def _packet(self, packet: bytes) -> bytes:
        if len(packet) < 8 or packet[0] != 0x00:
            return b""
        op, size = packet[1], struct.unpack_from("<H", packet, 2)[0]
        body = packet[8 : 8 + size]
        self.commands.append(op)
        if op == SYNC:
            return b"".join(self._answer(op, 0 if self.stub else 0x20120707) for _ in range(8))
        if op == READ_REG and len(body) == 4:
            return self._answer(op, self._read_reg(struct.unpack("<I", body)[0]))
        if op == WRITE_REG and len(body) >= 8:
            address, value = struct.unpack_from("<II", body)
            self._write_reg(address, value)
            return self._answer(op)
        if op == GET_SECURITY_INFO:
            if self.chip.USES_MAGIC_VALUE:
                return self._answer(op, status=UNSUPPORTED)
            info = struct.pack("<IB7BII", 0, 0, *([0] * 7), self.chip.IMAGE_CHIP_ID, 0)
            return self._answer(op, data=info)
        if op in (MEM_BEGIN, MEM_DATA, SPI_SET_PARAMS, SPI_ATTACH, CHANGE_BAUDRATE):
            return self._answer(op)
        if op == MEM_END:
            stay, entry = struct.unpack_from("<II", body) if len(body) >= 8 else (1, 0)
            reply = self._answer(op)
            if not stay and entry:
                self.stub = True
                reply += slip(b"OHAI")  # the stub's greeting
            return reply
        if op == ERASE_FLASH and self.stub:
            self.flash[:] = b"\xff" * len(self.flash)
            self.erased = True
            return self._answer(op)
        if op == ERASE_REGION and self.stub and len(body) >= 8:
            offset, length = struct.unpack_from("<II", body)
            self.flash[offset : offset + length] = b"\xff" * len(self.flash[offset : offset + length])
            return self._answer(op)
        if op in (FLASH_BEGIN, FLASH_DEFL_BEGIN) and len(body) >= 16:
            self._write_at = struct.unpack_from("<IIII", body)[3]
            self._inflate = zlib.decompressobj() if op == FLASH_DEFL_BEGIN else None
            return self._answer(op)
        if op in (FLASH_DATA, FLASH_DEFL_DATA) and len(body) >= 16:
            block = body[16 : 16 + struct.unpack_from("<I", body)[0]]
            if self._inflate is not None:
                block = self._inflate.decompress(block)
            self._write(block)
            if self._inflate is not None and self._inflate.eof:
                self.writes += 1
            return self._answer(op)
        if op in (FLASH_END, FLASH_DEFL_END):
            if op == FLASH_END:
                self.writes += 1
            return self._answer(op)
        if op == SPI_FLASH_MD5 and len(body) >= 8:
            address, length = struct.unpack_from("<II", body)
            digest = hashlib.md5(self.flash[address : address + length], usedforsecurity=False).digest()
            return self._answer(op, data=digest if self.stub else digest.hex().encode())
        return self._answer(op, status=UNSUPPORTED)

    def _write(self, block: bytes) -> None:
        end = min(len(self.flash), self._write_at + len(block))
        self.flash[self._write_at : end] = block[: end - self._write_at]
        self._write_at = end

    def _read_reg(self, address: int) -> int:
        if address == CHIP_MAGIC_REG and self.chip.USES_MAGIC_VALUE:
            return int(self.chip.MAGIC_VALUE)
        return self.registers.get(address, 0)

    def _write_reg(self, address: int, value: int) -> None:
        base = self.chip.SPI_REG_BASE
        if address == base and value & SPI_CMD_USR:  # run the SPI flash command set up in USR2
            command = self.registers.get(base + self.chip.SPI_USR2_OFFS, 0) & 0xFF
            self.registers[base + self.chip.SPI_W0_OFFS] = FLASH_ID if command == SPIFLASH_RDID else 0
            self.registers[base] = 0  # done at once
            return
        self.registers[address] = value


class EspRom:
    """The bootloader alone on a pseudo-terminal, in a thread: a board held in download mode."""

    def __init__(self, link: Path, chip: str = "esp32") -> None:
        self.link = link
        self.protocol = EspRomProtocol(chip)
        self._master = self._slave = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def commands(self) -> list[int]:
        return self.protocol.commands

    def start(self) -> None:
        self._master, self._slave = raw_port(self.link)
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
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(self._master, 65536)
            except OSError:
                continue
            reply = self.protocol.feed(data)
            with contextlib.suppress(OSError):
                if reply:
                    os.write(self._master, reply)
