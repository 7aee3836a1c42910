"""`cityedge node flash`: the image checks, esptool's command line (parsed by esptool itself), every failure's words.

The failures that come from the board are produced by the real esptool against pseudo-terminals:
a silent line (no bootloader) and hil/esp32/esprom.py (a ROM bootloader of another chip).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from esptool import cli as esptool_cli

from gateway.technician import NodeToolError
from gateway.technician.flash import CHIPS, esptool_args, explain_esptool_failure, inspect_image
from gateway.technician.port import check_port
from hil.esp32.esprom import EspRom
from hil.esp32.images import app_image, combined_image, write
from hil.ptyline import raw_port
from tests.cli_harness import cityedge


@pytest.fixture
def silent_port(tmp_path: Path) -> Iterator[str]:
    """A serial port with nothing answering (a board that is not in download mode)."""
    link = tmp_path / "ttyUSB0"
    master, slave = raw_port(link)
    yield str(link)
    os.close(master)
    os.close(slave)


def image_for(tmp_path: Path, chip: str, **kwargs: str) -> Path:
    spec = CHIPS[chip]
    return write(tmp_path / f"{chip}.bin", combined_image(spec.image_id, spec.offset, **kwargs))


# -- the image -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chip", sorted(CHIPS))
def test_a_micropython_image_is_recognised_for_its_chip(tmp_path: Path, chip: str) -> None:
    image = inspect_image(image_for(tmp_path, chip, version="v1.24.1"))
    assert image.chip.name == chip
    assert (image.project, image.version, image.idf) == ("micropython", "v1.24.1", "v5.2.2")
    assert f"micropython v1.24.1 for {CHIPS[chip].title}" in image.describe()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "is not an ESP32 firmware image (it is empty)"),
        (b"UF2\n" + b"\0" * 8192, "is not an ESP32 firmware image (it does not start like one)"),
        (b"\x7fELF" + b"\0" * 8192, "Download the .bin for your board"),
    ],
)
def test_files_that_are_not_firmware_are_refused(tmp_path: Path, content: bytes, words: str) -> None:
    with pytest.raises(NodeToolError, match=r".*") as caught:
        inspect_image(write(tmp_path / "x.bin", content))
    assert words in str(caught.value)


def test_an_image_of_another_project_is_not_micropython(tmp_path: Path) -> None:
    path = image_for(tmp_path, "esp32", project="arduino-lib-builder")
    with pytest.raises(NodeToolError) as caught:
        inspect_image(path)
    assert "holds the 'arduino-lib-builder' project, not MicroPython" in str(caught.value)


def test_an_app_only_image_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NodeToolError) as caught:
        inspect_image(write(tmp_path / "micropython.bin", app_image(0) + b"\0" * 8192))
    assert "application image without bootloader" in str(caught.value)


def test_an_image_for_another_chip_than_asked_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NodeToolError) as caught:
        inspect_image(image_for(tmp_path, "esp32s3"), chip="esp32")
    assert "is MicroPython for ESP32-S3, but this node is an ESP32 (--chip esp32)" in str(caught.value)


def test_an_unsupported_chip_is_named(tmp_path: Path) -> None:
    with pytest.raises(NodeToolError) as caught:
        inspect_image(write(tmp_path / "h2.bin", combined_image(16, 0)))
    assert "chip CityEdge does not support (chip id 16)" in str(caught.value)


def test_a_missing_image_file(tmp_path: Path) -> None:
    with pytest.raises(NodeToolError) as caught:
        inspect_image(tmp_path / "nope.bin")
    assert "There is no firmware file" in str(caught.value)


# -- esptool's command line, parsed by esptool -----------------------------------------------------------------


def parse_with_esptool(args: list[str]) -> tuple[dict[str, object], str, dict[str, object]]:
    esptool_cli._esp = None  # what EsptoolGroup.__call__ sets before parsing: no pre-connected chip
    context = esptool_cli.make_context("esptool", list(args))
    rest = [*getattr(context, "_protected_args", []), *context.args]
    name, command, sub_args = esptool_cli.resolve_command(context, rest)
    assert command is not None and name is not None
    sub = command.make_context(name, sub_args, parent=context)
    return context.params, name, sub.params


@pytest.mark.parametrize("chip", sorted(CHIPS))
def test_esptool_accepts_the_command_line_for_each_chip(tmp_path: Path, silent_port: str, chip: str) -> None:
    image = image_for(tmp_path, chip)
    spec = CHIPS[chip]
    top, name, sub = parse_with_esptool(esptool_args(silent_port, image, spec))
    assert top["chip"] == chip
    assert top["port"] == silent_port
    assert top["baud"] == 460800
    assert top["before"] == "default-reset" and top["after"] == "hard-reset"
    assert name == "write-flash"
    assert sub["erase_all"] is True  # erase, then write
    assert sub["flash_mode"] == "keep" and sub["flash_size"] == "keep"
    [(address, handle)] = sub["addr_filename"]  # type: ignore[misc]
    assert address == {"esp32": 0x1000, "esp32s2": 0x1000}.get(chip, 0)
    assert Path(handle.name) == image
    handle.close()


def test_esptool_accepts_manual_boot_and_attempts(tmp_path: Path, silent_port: str) -> None:
    args = esptool_args(silent_port, image_for(tmp_path, "esp32c3"), CHIPS["esp32c3"], manual_boot=True,
                        connect_attempts=2, baud=115200)  # fmt: skip
    top, _, _ = parse_with_esptool(args)
    assert top["before"] == "no-reset"
    assert top["connect_attempts"] == 2
    assert top["baud"] == 115200


# -- what the technician reads when it fails --------------------------------------------------------------------


def test_no_such_port(tmp_path: Path) -> None:
    result = cityedge("node", "flash", "--port", str(tmp_path / "ttyUSB9"), "--firmware",
                      str(image_for(tmp_path, "esp32")))  # fmt: skip
    assert result.returncode == 1
    assert f"There is no serial port {tmp_path / 'ttyUSB9'}." in result.stderr
    assert "charge-only" in result.stderr


def test_permission_denied_says_how_to_join_dialout(silent_port: str) -> None:
    """A real EACCES from the kernel: a child process that is not root opens the root-only port."""
    device = os.path.realpath(silent_port)  # /dev/pts/N: root's, like /dev/ttyUSB0 is root's and dialout's
    os.chmod(device, 0o600)
    read, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                check_port(device)
                message = "opened"
            except NodeToolError as exc:
                message = str(exc)
            os.write(write_end, message.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    message = os.read(read, 4096).decode()
    os.close(read)
    os.waitpid(child, 0)
    assert message.startswith(f"Permission denied on {device}.")
    assert "sudo usermod -aG dialout $USER" in message


def test_esptools_own_permission_error_is_explained_the_same_way() -> None:
    output = "A serial exception error occurred: [Errno 13] could not open port /dev/ttyUSB0: Permission denied"
    words = explain_esptool_failure("/dev/ttyUSB0", CHIPS["esp32"], None, output)  # type: ignore[arg-type]
    assert words.startswith("Permission denied on /dev/ttyUSB0.") and "dialout" in words


def test_no_answer_from_the_bootloader_says_to_hold_boot(tmp_path: Path, silent_port: str) -> None:
    result = cityedge("node", "flash", "--port", silent_port, "--firmware", str(image_for(tmp_path, "esp32")),
                      "--connect-attempts", "1")  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "esptool v5" in result.stdout  # the real esptool ran, its progress shown
    assert f"No answer from the ESP32 bootloader on {silent_port}." in result.stderr
    assert "hold BOOT, press and release EN" in result.stderr


def test_wrong_chip_is_named_by_what_esptool_found(tmp_path: Path) -> None:
    rom = EspRom(tmp_path / "ttyUSB1", chip="esp32s3")
    rom.start()
    try:
        result = cityedge("node", "flash", "--port", str(rom.link), "--firmware", str(image_for(tmp_path, "esp32")),
                          "--connect-attempts", "1")  # fmt: skip
    finally:
        rom.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"Wrong chip: the board on {rom.link} is an ESP32-S3, the image is for ESP32." in result.stderr
    assert "Flash the ESP32-S3 build of MicroPython" in result.stderr and "--chip esp32s3" in result.stderr
    assert 0x08 in rom.commands  # esptool synced with the emulated ROM


def test_an_image_that_is_not_micropython_never_reaches_the_board(tmp_path: Path) -> None:
    rom = EspRom(tmp_path / "ttyUSB1", chip="esp32")
    rom.start()
    try:
        path = image_for(tmp_path, "esp32", project="blink")
        result = cityedge("node", "flash", "--port", str(rom.link), "--firmware", str(path))
    finally:
        rom.stop()
    assert result.returncode == 1
    assert "holds the 'blink' project, not MicroPython" in result.stderr
    assert rom.commands == []  # nothing was erased: esptool never ran


@pytest.mark.parametrize("chip", sorted(CHIPS))
def test_flash_erases_writes_at_the_chips_offset_and_esptool_verifies_it(tmp_path: Path, chip: str) -> None:
    """The real esptool, stub and all, against an emulated bootloader that keeps what is written."""
    rom = EspRom(tmp_path / "ttyUSB1", chip=chip)
    rom.protocol.flash[0x300000:0x300010] = b"old filesystem!!"
    rom.start()
    image = image_for(tmp_path, chip)
    try:
        result = cityedge("node", "flash", "--port", str(rom.link), "--firmware", str(image))
    finally:
        rom.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    offset = CHIPS[chip].offset
    assert f"to {rom.link} at 0x{offset:x} (the whole flash is erased)" in result.stdout
    assert "Hash of data verified." in result.stdout  # esptool's own MD5 check of what the board holds
    assert "done: MicroPython v1.24.1 is on the board." in result.stdout
    data = image.read_bytes()
    assert rom.protocol.flash[offset : offset + len(data)] == data
    assert rom.protocol.erased and rom.protocol.flash[0x300000:0x300010] == b"\xff" * 16
    assert bytes(rom.protocol.flash[:offset]) == b"\xff" * offset


def test_chip_option_against_the_image(tmp_path: Path, silent_port: str) -> None:
    result = cityedge("node", "flash", "--port", silent_port, "--firmware", str(image_for(tmp_path, "esp32c6")),
                      "--chip", "esp32s3")  # fmt: skip
    assert result.returncode == 1
    assert "is MicroPython for ESP32-C6, but this node is an ESP32-S3 (--chip esp32s3)" in result.stderr
