# The USB console of an ESP32 running MicroPython, on the unix port: run with the flash directory as the
# working directory. It boots like the board (boot.py, then main.py unless the soft reset came from the raw
# REPL), then serves MicroPython's friendly REPL and its raw REPL with raw-paste, the protocol mpremote speaks.
#
#   micropython chip.py FAKES MODE      MODE: power_on | reset | soft | soft_raw | watchdog | deep_sleep
#
# The host (hil/esp32/emulated_board.py) relays the pseudo-terminal to stdin/stdout, turns Ctrl-C into SIGINT (a
# KeyboardInterrupt here, as the USB interrupt character is on the chip) and restarts this process on
# the exit codes below. Status lines for the host go to stderr: "INT" once a Ctrl-C has been handled.
import sys

FAKES = sys.argv[1] if len(sys.argv) > 1 else "."
MODE = sys.argv[2] if len(sys.argv) > 2 else "power_on"
sys.path.insert(0, "")  # the flash filesystem: /, where mpremote puts files, as on the board
sys.path.append("lib")
sys.path.append(FAKES)

_err = sys.stderr
_err.write("UP\n")  # MicroPython's own Ctrl-C handling is in place from here on: the host may send SIGINT

import fake_machine  # noqa: E402
import fake_network  # noqa: E402
import fake_socket  # noqa: E402

sys.modules["machine"] = fake_machine
sys.modules["network"] = fake_network
sys.modules["socket"] = fake_socket

import os  # noqa: E402

from exits import EXIT_SOFT, EXIT_SOFT_RAW  # noqa: E402

FLASHED = os.getenv("CITYEDGE_FIRMWARE")  # the version of the image flashed onto this board: its banner says it
_VERSION = FLASHED or "v%d.%d.%d" % sys.implementation.version[:3]
BANNER = "MicroPython " + _VERSION + " on 2026-01-01; CityEdge emulated board with ESP32\r\nType \"help()\" for more information.\r\n"


RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
WINDOW = 256  # raw-paste flow-control window, as on the chip (MICROPY_REPL_STDIN_BUFFER_MAX)

_in = sys.stdin.buffer
_out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else sys.stdout


class Interrupted(Exception):
    pass


def out(data):
    if isinstance(data, str):
        data = data.encode()
    _out.write(data)


def status(text):
    _err.write(text + "\n")


def getc():
    """One byte from the console; Ctrl-C (a SIGINT from the host) comes back as 3."""
    try:
        c = _in.read(1)
    except KeyboardInterrupt:
        status("INT")
        return 3
    if not c:
        sys.exit(0)  # the host went away
    return c[0]


class Main:
    """The namespace the REPL and main.py share (__main__ on the chip)."""

    def __init__(self):
        self.globals = {"__name__": "__main__"}

    def run_file(self, name):
        try:
            with open(name) as f:
                source = f.read()
        except OSError:
            return
        self.run(source, name)

    def run(self, source, name="<stdin>", eof=False):
        """Execute like pyexec: output, then (with eof) a 0x04, the traceback, a 0x04."""
        try:
            exec(compile(source, name, "exec"), self.globals)
        except SystemExit:
            raise
        except KeyboardInterrupt as exc:
            status("INT")
            self._report(exc, eof)
            return
        except BaseException as exc:  # noqa: BLE001 - the REPL reports everything and goes on
            self._report(exc, eof)
            return
        if eof:
            out(b"\x04\x04")

    def _report(self, exc, eof):
        if eof:
            out(b"\x04")
        sys.print_exception(exc, sys.stdout)
        if eof:
            out(b"\x04")

    def evaluate_line(self, line):
        try:
            value = eval(line, self.globals)
        except SyntaxError:
            self.run(line)
            return
        except SystemExit:
            raise
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                status("INT")
            sys.print_exception(exc, sys.stdout)
            return
        if value is not None:
            out(repr(value) + "\r\n")


def raw_paste(main):
    """Raw-paste: take the source under flow control, acknowledge its end, then run it."""
    out(b"R\x01" + bytes((WINDOW & 0xFF, WINDOW >> 8)))
    source = bytearray()
    remain = WINDOW
    while True:
        c = getc()
        if c in (3, 4):
            out(b"\x04")  # end of data, as the host expects
            if c == 3:
                return
            break
        source.append(c)
        remain -= 1
        if remain == 0:
            out(b"\x01")  # room for another window
            remain = WINDOW
    main.run(bytes(source).decode(), eof=True)


def raw_repl(main):
    out(RAW_BANNER)
    line = bytearray()
    out(b">")
    while True:
        c = getc()
        if c == 1:  # Ctrl-A: reset the raw REPL, or the raw-paste request "\x05A\x01"
            if len(line) == 2 and line[0] == 5:
                if line[1] == ord("A"):
                    raw_paste(main)
                else:
                    out(b"R\x00")
                line = bytearray()
                out(b">")
                continue
            out(b"\r\n")
            out(RAW_BANNER)
            line = bytearray()
            out(b">")
        elif c == 2:  # Ctrl-B: friendly REPL
            out(b"\r\n")
            return
        elif c == 3:
            line = bytearray()
        elif c == 4:
            out(b"OK")
            if not line:
                out(b"\r\n")
                fake_machine._exit(EXIT_SOFT_RAW)
            main.run(bytes(line).decode(), eof=True)
            line = bytearray()
            out(b">")
        else:
            line.append(c)


def friendly_repl(main):
    out(BANNER)
    while True:
        out(b">>> ")
        line = bytearray()
        while True:
            c = getc()
            if c == 1:  # Ctrl-A: raw REPL
                out(b"\r\n")
                raw_repl(main)
                out(BANNER)
                break
            if c == 2:
                out(b"\r\n" + BANNER.encode())
                break
            if c == 3:
                out(b"\r\n")
                break
            if c == 4:
                if not line:
                    out(b"\r\n")
                    fake_machine._exit(EXIT_SOFT)
                continue
            if c in (13, 10):
                out(b"\r\n")
                if line.strip():
                    main.evaluate_line(bytes(line).decode())
                break
            if c in (8, 127):
                if line:
                    line = line[:-1]
                    out(b"\x08 \x08")
                continue
            line.append(c)
            out(bytes((c,)))


def boot():
    main = Main()
    if MODE in ("soft", "soft_raw"):
        out(b"MPY: soft reboot\r\n")
    if "boot.py" not in os.listdir():  # a freshly flashed filesystem, as MicroPython's _boot.py makes it
        with open("boot.py", "w") as f:
            f.write("# This file is executed on every boot (including wake-boot from deepsleep)\n")
    main.run_file("boot.py")
    if MODE != "soft_raw":
        main.run_file("main.py")
        friendly_repl(main)
    raw_repl(main)
    friendly_repl(main)


boot()
