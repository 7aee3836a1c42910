"""The emulated board (hil/esp32/emulated_board.py) acts like MicroPython on a USB cable: friendly REPL, Ctrl-C,
soft reboot, the classic raw REPL as well as raw-paste, and resets that boot from its flash directory."""

from __future__ import annotations

import time

import serial
from mpremote.transport_serial import SerialTransport

from hil.fixtures import BoardFactory


def read_until(port: serial.Serial, ending: bytes, timeout: float = 10.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(ending) and time.monotonic() < deadline:
        data += port.read(1)
    assert data.endswith(ending), f"wanted {ending!r}, got {data[-200:]!r}"
    return data


def test_friendly_repl_ctrl_c_and_soft_reboot(board_factory: BoardFactory) -> None:
    board = board_factory()
    (board.flash / "main.py").write_text("print('main ran')\n")
    with serial.Serial(board.port, 115200, timeout=0.1) as port:
        port.write(b"\r\x03")
        read_until(port, b">>> ")
        time.sleep(0.5)
        port.reset_input_buffer()  # the prompts the \r and the Ctrl-C each printed
        port.write(b"print(6 * 7)\r")
        assert b"42\r\n" in read_until(port, b">>> ")
        port.write(b"x = 5\r")
        read_until(port, b">>> ")
        port.write(b"x + 1\r")  # an expression shows its value, and the namespace persists
        assert b"6\r\n" in read_until(port, b">>> ")
        port.write(b"while True: pass\r")
        time.sleep(0.5)
        port.write(b"\x03")  # Ctrl-C interrupts the running loop
        assert b"KeyboardInterrupt" in read_until(port, b">>> ")
        port.write(b"\x04")  # Ctrl-D at an empty prompt: soft reboot, main.py runs again
        after = read_until(port, b">>> ")
        assert b"MPY: soft reboot" in after and b"main ran" in after


def test_classic_raw_repl_without_raw_paste(board_factory: BoardFactory) -> None:
    board = board_factory()
    transport = SerialTransport(board.port)
    try:
        transport.use_raw_paste = False  # older tools: the whole program, then Ctrl-D, then "OK"
        transport.enter_raw_repl()
        assert transport.eval("sum(range(10))") == 45
        transport.fs_writefile("data.bin", bytes(range(256)) * 8)
        assert transport.fs_readfile("data.bin") == bytes(range(256)) * 8
        out, err = transport.exec_raw("raise ValueError('boom')")
        assert out == b"" and b"ValueError: boom" in err
    finally:
        transport.close()
    assert (board.flash / "data.bin").read_bytes() == bytes(range(256)) * 8


def test_a_program_that_resets_boots_again_from_flash(board_factory: BoardFactory) -> None:
    board = board_factory()
    (board.flash / "main.py").write_text(
        "import machine\nprint('cause', machine.reset_cause())\nif machine.reset_cause() == 1:\n    machine.reset()\n"
    )
    # Power on: cause 1, so main.py resets the board; then cause 5: the ESP32 port reports machine.reset()
    # (a software CPU reset) as SOFT_RESET, as a real board does.
    board.press_reset()
    deadline = time.monotonic() + 15
    while "cause 5" not in board.console() and time.monotonic() < deadline:
        time.sleep(0.1)
    console = board.console()
    assert "cause 1" in console and "cause 5" in console
    assert console.index("rst:0xc (SW_CPU_RESET)") > console.index("cause 1")
