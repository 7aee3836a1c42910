"""A MicroPython board on a USB serial port, driven through mpremote's transport (its raw REPL protocol).

`Board` opens the port (after the plain-language port checks), interrupts whatever runs and
soft-resets into the raw REPL, so the node's app is stopped while files change. Files are
written next to their final name and renamed only after their SHA-256 has been checked on the
board, so a pulled cable leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from gateway.technician import NodeToolError
from gateway.technician.port import check_port

# sys.implementation._mpy >> 10: the native architecture, the name mpy-cross's -march takes.
MPY_ARCHS = (None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp", "xtensa",
             "xtensawin", "rv32imc", "rv64imc")  # fmt: skip
NODE_STATE = ("readings.bin", "state.json", "boots")  # what the firmware keeps between boots, tied to its id
CLEAR_EARLY_RESETS = "import os\ntry:\n    os.remove('boots')\nexcept OSError:\n    pass\n"  # firmware BOOTS_FILE
NOT_MICROPYTHON = (
    "The board on {port} does not answer as MicroPython{said}.\n"
    "If it is new or was used for something else, flash MicroPython first: cityedge node flash --port {port} "
    "--firmware IMAGE.bin\n"
    "If it has MicroPython, press its EN/RST button once and try again."
)
_INFO = """
import sys, os
try:
    _m = os.uname().machine
    _r = os.uname().release
except AttributeError:
    _m = sys.platform
    _r = None
try:
    _s = os.statvfs('/')
    _free = _s[0] * _s[3]
except (AttributeError, OSError):
    _free = None
try:
    import machine
    _id = ''.join('%02x' % b for b in machine.unique_id())
except Exception:
    _id = None
print(repr((sys.platform, tuple(sys.implementation.version[:3]), getattr(sys.implementation, '_mpy', 0), _m, _free,
            _id, _r)))
"""
_HASHES = """
import hashlib, binascii
def _h(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256()
    b = bytearray(512)
    m = memoryview(b)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(m[:n])
    f.close()
    return binascii.hexlify(h.digest()).decode()
print(repr(dict((p, _h(p)) for p in %r)))
"""


_READ_CONFIG = """
import json, hashlib, binascii
try:
    with open(%r) as f:
        c = json.load(f)
except (OSError, ValueError):
    c = None
if isinstance(c, dict):
    for s in ('wifi', 'broker'):
        p = c.get(s)
        if isinstance(p, dict) and isinstance(p.get('password'), str):
            p['password'] = 'sha256:' + binascii.hexlify(hashlib.sha256(p['password'].encode()).digest()).decode()
print(json.dumps(c))
"""


def mask_secrets(config: Any) -> Any:
    """What Board.read_config returns for this config: passwords as their SHA-256."""
    if not isinstance(config, dict):
        return config
    masked = json.loads(json.dumps(config))
    for section in ("wifi", "broker"):
        part = masked.get(section)
        if isinstance(part, dict) and isinstance(part.get("password"), str):
            part["password"] = "sha256:" + hashlib.sha256(part["password"].encode()).hexdigest()
    return masked


@dataclass(frozen=True, slots=True)
class BoardInfo:
    platform: str  # sys.platform: esp32, rp2, linux (the emulated board)
    version: tuple[int, int, int]  # MicroPython's
    mpy: int  # sys.implementation._mpy
    machine: str  # os.uname().machine, e.g. "Generic ESP32 module with ESP32"
    free_bytes: int | None  # free space on the flash filesystem
    unique_id: str | None = None  # machine.unique_id() in hex (an ESP32's MAC): the firmware reports it as `board`
    release: str | None = None  # os.uname().release: the MicroPython build as its makers name it, e.g. 1.24.1

    @property
    def version_text(self) -> str:
        return self.release or ".".join(str(v) for v in self.version)

    @property
    def mpy_version(self) -> int:
        return self.mpy & 0xFF

    @property
    def arch(self) -> str | None:
        index = self.mpy >> 10
        return MPY_ARCHS[index] if index < len(MPY_ARCHS) else None

    def describe(self) -> str:
        version = self.version_text
        return f"MicroPython {version} on {self.machine} (.mpy v{self.mpy_version}, {self.arch or 'no native code'})"


def _last_line(exc: TransportExecError) -> str:
    lines: list[str] = exc.error_output.strip().splitlines() or ["?"]
    return lines[-1]


class Board:
    def __init__(self, port: str, baud: int = 115200, connect_timeout: float = 10.0) -> None:
        self.port = port
        self.baud = baud
        self.connect_timeout = connect_timeout
        self._transport: SerialTransport | None = None

    def __enter__(self) -> Board:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        check_port(self.port)
        said = io.StringIO()
        try:
            with contextlib.redirect_stdout(said):  # mpremote prints what it got on failure; we explain instead
                transport = SerialTransport(self.port, baudrate=self.baud)
        except TransportError:
            raise NodeToolError(f"Cannot open {self.port}: it went away or another program holds it.") from None
        try:
            with contextlib.redirect_stdout(said):
                transport.enter_raw_repl(soft_reset=True, timeout_overall=self.connect_timeout)
        except (TransportError, OSError):
            with contextlib.suppress(Exception):
                transport.close()
            heard = said.getvalue().strip()
            raise NodeToolError(
                NOT_MICROPYTHON.format(port=self.port, said=f" (it said {heard[:60]})" if heard != "b''" else "")
            ) from None
        self._transport = transport

    def close(self) -> None:
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.exit_raw_repl()
            with contextlib.suppress(Exception):
                self._transport.close()
            self._transport = None

    @property
    def transport(self) -> SerialTransport:
        if self._transport is None:
            raise RuntimeError("the board is not open")
        return self._transport

    # -- running code ------------------------------------------------------------------------------

    def exec(self, code: str) -> bytes:
        try:
            result: bytes = self.transport.exec(code)
            return result
        except TransportExecError as exc:
            raise NodeToolError(f"The board reported an error: {_last_line(exc)}") from None
        except (TransportError, OSError) as exc:
            raise self._lost(exc) from None

    def eval(self, code: str) -> Any:
        """Run code that prints one repr() and return the value."""
        return ast.literal_eval(self.exec(code).decode().strip())

    def info(self) -> BoardInfo:
        platform, version, mpy, machine, free, unique, release = self.eval(_INFO)
        return BoardInfo(str(platform), tuple(version), int(mpy), str(machine), free, unique, release)

    # -- files -------------------------------------------------------------------------------------

    def hashes(self, paths: list[str]) -> dict[str, str | None]:
        """SHA-256 (hex) of each file on the board, computed there; None when the file is missing."""
        if not paths:
            return {}
        result: dict[str, str | None] = self.eval(_HASHES % (paths,))
        return result

    def listdir(self, path: str = "") -> list[str]:
        names: list[str] = self.eval(f"import os\nprint(repr(os.listdir({path!r})))")
        return names

    def write(self, path: str, data: bytes) -> None:
        try:
            self.transport.fs_writefile(path, data, chunk_size=512)
        except TransportExecError as exc:
            last = _last_line(exc)
            if "ENOSPC" in last or "28" in last:
                raise NodeToolError(f"The board's flash is full while writing {path}.") from None
            raise NodeToolError(f"Could not write {path} on the board: {last}") from None
        except (TransportError, OSError) as exc:
            raise self._lost(exc, f" while writing {path}") from None

    def _lost(self, exc: Exception, doing: str = "") -> NodeToolError:
        return NodeToolError(
            f"Lost the board on {self.port}{doing} ({exc}): unplugged? Plug it back in and run again; the old app "
            "is intact (new files are put in place only once all are on the board and checked, and the next run "
            "removes half-written copies)."
        )

    def rename(self, source: str, target: str) -> None:
        self.exec(f"import os\nos.rename({source!r}, {target!r})")

    def remove(self, paths: list[str]) -> None:
        if paths:
            self.exec(f"import os\nfor p in {paths!r}:\n try:\n  os.remove(p)\n except OSError:\n  pass\n")

    def makedirs(self, directories: list[str]) -> None:
        for directory in directories:
            self.exec(f"import os\ntry:\n os.mkdir({directory!r})\nexcept OSError:\n pass\n")

    def read_config(self, path: str = "config.json") -> Any:
        """The board's config.json as the board's own JSON parser reads it, with every password replaced by
        its SHA-256 there, so no secret crosses the cable back. None when missing or unreadable."""
        text = self.exec(_READ_CONFIG % path).decode().strip()
        try:
            return json.loads(text)
        except ValueError:
            return None

    def reset(self) -> None:
        """Hard reset (machine.reset): the board boots from its flash; the port is released.

        The firmware counts resets soon after starting and goes into safe mode after three in a row (a crash
        loop); a reset the tools ask for is not one, so the count is cleared first."""
        with contextlib.suppress(Exception):
            self.transport.exec_raw_no_follow(CLEAR_EARLY_RESETS + "import machine\nmachine.reset()")
        with contextlib.suppress(Exception):
            self.transport.serial.flush()
        self._transport_close_quietly()

    def _transport_close_quietly(self) -> None:
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.close()
            self._transport = None
