"""ESP32 firmware images built the way ESP-IDF lays them out: for rehearsals and for testing the image checks.

A combined image starts with the bootloader (image header with the chip id), has the partition
table at flash 0x8000 and the app (with its esp_app_desc_t) in the factory partition. It is not
MicroPython: esptool, `cityedge node flash` and the emulated board accept it as they would a
release from micropython.org, and the emulated board then runs its unix port of MicroPython,
reporting the version written into the image. Only for rehearsing on the emulated board: on a
real ESP32 it would not boot. `cityedge hil image` writes one.
"""

from __future__ import annotations

import struct
from pathlib import Path

FACTORY = 0x10000


def _image_header(chip_id: int, segments: int = 1) -> bytes:
    common = struct.pack("<BBBBI", 0xE9, segments, 2, 0x20, 0x40080400)
    extended = struct.pack("<B3sHBHH4sB", 0xEE, b"\0\0\0", chip_id, 0, 0, 0xFFFF, b"\0" * 4, 0)
    return common + extended


def _text(value: str, size: int) -> bytes:
    return value.encode().ljust(size, b"\0")


def app_image(chip_id: int, project: str = "micropython", version: str = "v1.24.1", idf: str = "v5.2.2") -> bytes:
    desc = struct.pack("<IIII", 0xABCD5432, 0, 0, 0) + _text(version, 32) + _text(project, 32)
    desc += _text("12:00:00", 16) + _text("Nov 29 2026", 16) + _text(idf, 32) + b"\x11" * 32 + b"\0" * 80
    segment = struct.pack("<II", 0x3F400020, len(desc)) + desc
    return _image_header(chip_id) + segment + b"MicroPython " * 64


def combined_image(chip_id: int, offset: int, *, project: str = "micropython", version: str = "v1.24.1") -> bytes:
    """What micropython.org ships: bootloader, partition table and app, to be written at `offset`."""
    bootloader = _image_header(chip_id) + struct.pack("<II", 0x3FFF0000, 64) + b"\0" * 64
    table = b""
    for kind, subtype, start, size, label in (
        (1, 2, 0x9000, 0x6000, "nvs"),
        (1, 1, 0xF000, 0x1000, "phy_init"),
        (0, 0, FACTORY, 0x1F0000, "factory"),
    ):
        table += b"\xaa\x50" + struct.pack("<BBII", kind, subtype, start, size) + _text(label, 16) + b"\0" * 4
    data = bytearray(b"\xff" * (FACTORY - offset))
    data[0 : len(bootloader)] = bootloader
    data[0x8000 - offset : 0x8000 - offset + len(table)] = table
    return bytes(data) + app_image(chip_id, project, version)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


REHEARSAL_VERSION = "v1.24.1-rehearsal"


def rehearsal_image(chip: str = "esp32", version: str = REHEARSAL_VERSION) -> bytes:
    """The image `cityedge hil image` writes: for the emulated board only."""
    from gateway.technician.flash import CHIPS

    spec = CHIPS[chip]
    return combined_image(spec.image_id, spec.offset, version=version)
