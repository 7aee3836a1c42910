"""Flash MicroPython with esptool: check the image first, erase and write at the chip's offset, explain failures.

A MicroPython build for an ESP32 is one file (bootloader, partition table, app) written at the
chip's bootloader offset: 0x1000 on the ESP32 and ESP32-S2, 0 on the S3, C3 and C6. The image's
own header says which chip it is for and its app descriptor says which project and version, so
a wrong or foreign image is refused before the board is erased.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gateway.technician import NodeToolError
from gateway.technician.port import DIALOUT_HINT, check_port, no_port_message


@dataclass(frozen=True, slots=True)
class Chip:
    name: str  # esptool's --chip
    title: str  # as esptool and Espressif write it
    image_id: int  # the chip id in an image's extended header
    offset: int  # where the combined MicroPython image goes


CHIPS = {
    c.name: c
    for c in (
        Chip("esp32", "ESP32", 0, 0x1000),
        Chip("esp32s2", "ESP32-S2", 2, 0x1000),
        Chip("esp32s3", "ESP32-S3", 9, 0x0),
        Chip("esp32c3", "ESP32-C3", 5, 0x0),
        Chip("esp32c6", "ESP32-C6", 13, 0x0),
    )
}
BY_IMAGE_ID = {c.image_id: c for c in CHIPS.values()}
BY_TITLE = {c.title: c for c in CHIPS.values()}
IMAGE_MAGIC = 0xE9
APP_DESC_MAGIC = 0xABCD5432
PARTITION_MAGIC = b"\xaa\x50"
PARTITION_TABLE = 0x8000  # flash address of the partition table in MicroPython's builds
DEFAULT_BAUD = 460800
DOWNLOAD = "https://micropython.org/download/"


@dataclass(frozen=True, slots=True)
class FirmwareImage:
    path: Path
    chip: Chip
    project: str  # from the app descriptor: "micropython"
    version: str  # e.g. v1.24.1
    idf: str  # ESP-IDF version
    size: int

    def describe(self) -> str:
        return f"{self.project} {self.version} for {self.chip.title} (ESP-IDF {self.idf}), {self.size / 1024:.0f} kB"


def inspect_image(path: Path, chip: str | None = None) -> FirmwareImage:
    """What the image is, or NodeToolError saying why it is not a MicroPython build for `chip`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NodeToolError(f"There is no firmware file {path}.") from None
    except OSError as exc:
        raise NodeToolError(f"Cannot read {path}: {exc.strerror}.") from None
    return inspect_bytes(data, path, chip)


def inspect_bytes(data: bytes, path: Path, chip: str | None = None) -> FirmwareImage:
    """inspect_image on bytes already read (an image file, or what a board's flash holds at the offset)."""
    not_firmware = (
        f"{path.name} is not an ESP32 firmware image{{why}}.\n"
        f"Download the .bin for your board from {DOWNLOAD} (not the .uf2, .hex, .elf or .zip)."
    )
    if len(data) < 0x1000 or data[0] != IMAGE_MAGIC:
        why = " (it is empty)" if not data else " (it does not start like one)"
        raise NodeToolError(not_firmware.format(why=why))
    image_id = struct.unpack_from("<H", data, 12)[0]
    target = BY_IMAGE_ID.get(image_id)
    if target is None:
        raise NodeToolError(
            f"{path.name} is built for a chip CityEdge does not support (chip id {image_id}); "
            f"supported: {', '.join(c.title for c in CHIPS.values())}."
        )
    if _app_descriptor(data, 0) is not None:
        raise NodeToolError(
            f"{path.name} is an application image without bootloader and partition table.\n"
            f"Use the complete MicroPython image (the one named like ESP32_GENERIC-....bin from {DOWNLOAD})."
        )
    app = _factory_app(data, target.offset)
    desc = _app_descriptor(data, app) if app is not None else None
    if desc is None or desc[0].lower() != "micropython":
        what = f"the {desc[0]!r} project" if desc else "no MicroPython application"
        raise NodeToolError(
            f"{path.name} is an image for {target.title} but holds {what}, not MicroPython.\n"
            f"Download MicroPython for your board from {DOWNLOAD}."
        )
    if chip is not None and chip != target.name:
        wanted = CHIPS[chip]
        raise NodeToolError(
            f"{path.name} is MicroPython for {target.title}, but this node is an {wanted.title} (--chip {chip}).\n"
            f"Download the {wanted.title} build from {DOWNLOAD}."
        )
    return FirmwareImage(path, target, desc[0], desc[1], desc[2], len(data))


def _factory_app(data: bytes, base: int) -> int | None:
    """File offset of the first app partition, from the partition table inside the combined image."""
    table = PARTITION_TABLE - base
    for entry in range(table, min(table + 0xC00, len(data) - 32), 32):
        if data[entry : entry + 2] != PARTITION_MAGIC:
            break
        kind, _subtype, offset = struct.unpack_from("<BBI", data, entry + 2)
        if kind == 0 and base <= offset < base + len(data):
            return int(offset) - base
    return None


def _app_descriptor(data: bytes, image: int) -> tuple[str, str, str] | None:
    """(project, version, idf version) from esp_app_desc_t, right after the image and first segment headers."""
    at = image + 24 + 8
    if image < 0 or len(data) < at + 256 or data[image] != IMAGE_MAGIC:
        return None
    if struct.unpack_from("<I", data, at)[0] != APP_DESC_MAGIC:
        return None

    def text(start: int, size: int) -> str:
        return data[at + start : at + start + size].split(b"\0", 1)[0].decode(errors="replace")

    return text(48, 32), text(16, 32), text(112, 32)


# -- esptool ----------------------------------------------------------------------------------------------


def esptool_args(
    port: str,
    image: Path,
    chip: Chip,
    *,
    baud: int = DEFAULT_BAUD,
    manual_boot: bool = False,
    connect_attempts: int | None = None,
) -> list[str]:
    """esptool's arguments to erase the whole flash and write the image at the chip's offset, then reset."""
    args = ["--chip", chip.name, "--port", port, "--baud", str(baud)]
    if manual_boot:  # no auto-reset circuit: the technician holds BOOT; do not touch DTR/RTS
        args += ["--before", "no-reset"]
    if connect_attempts is not None:
        args += ["--connect-attempts", str(connect_attempts)]
    args += ["--after", "hard-reset", "write-flash", "--erase-all", "--flash-mode", "keep", "--flash-size", "keep"]
    args += [hex(chip.offset), str(image)]
    return args


def explain_esptool_failure(port: str, chip: Chip, image: FirmwareImage, output: str) -> str:
    """A technician's explanation of esptool's last words."""
    wrong = re.search(r"This chip is (ESP[\w-]+), not (ESP[\w-]+)", output)
    if wrong:
        found = BY_TITLE.get(wrong.group(1))
        hint = (
            f"Flash the {wrong.group(1)} build of MicroPython ({DOWNLOAD}), with --chip {found.name}."
            if found
            else "CityEdge nodes use ESP32, ESP32-S2, -S3, -C3 or -C6 boards."
        )
        return f"Wrong chip: the board on {port} is an {wrong.group(1)}, the image is for {image.chip.title}.\n{hint}"
    if "Permission denied" in output:
        return f"Permission denied on {port}.\n{DIALOUT_HINT}"
    if re.search(r"No such file or directory|could not open port", output):
        return no_port_message(port)
    if re.search(r"Device or resource busy|port is busy|Resource temporarily unavailable", output):
        return f"{port} is in use by another program. Close other serial consoles and try again."
    if re.search(r"Failed to connect|No serial data received|Invalid head of packet|Wrong boot mode", output):
        return (
            f"No answer from the {chip.title} bootloader on {port}.\n"
            "Put the board in download mode: hold BOOT, press and release EN (or RST), release BOOT; "
            "then run this again (add --manual-boot if the board has no auto-reset).\n"
            "If it still fails, try another USB cable (some only charge) or a lower --baud, e.g. 115200."
        )
    tail = " / ".join(line.strip() for line in output.strip().splitlines()[-3:])
    return f"esptool failed: {tail}"


def flash(
    port: str,
    image: FirmwareImage,
    *,
    baud: int = DEFAULT_BAUD,
    manual_boot: bool = False,
    connect_attempts: int | None = None,
    out: BinaryIO | None = None,
) -> None:
    """Run esptool, its progress passed through to `out`; NodeToolError with an explanation when it fails."""
    check_port(port)
    args = esptool_args(
        port, image.path, image.chip, baud=baud, manual_boot=manual_boot, connect_attempts=connect_attempts
    )
    stream = out if out is not None else sys.stdout.buffer
    tail: deque[bytes] = deque(maxlen=200)
    with subprocess.Popen(
        [sys.executable, "-m", "esptool", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as proc:
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(4096):  # type: ignore[attr-defined]
            stream.write(chunk)
            stream.flush()
            tail.append(chunk)
        code = proc.wait()
    if code != 0:
        raise NodeToolError(explain_esptool_failure(port, image.chip, image, b"".join(tail).decode(errors="replace")))
