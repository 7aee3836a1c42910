"""An emulated ESP32 board on a serial port, for rehearsing and testing the technician tools without hardware.

The board is the MicroPython unix port behind a pseudo-terminal. On the MicroPython side
(`hil/esp32/micropython/chip.py`) it boots like the chip: boot.py and main.py from its flash
filesystem (a directory), then MicroPython's friendly REPL and the raw REPL with raw-paste that
mpremote speaks. On this side, `EmulatedBoard` owns the pseudo-terminal (a stable link such as
`<dir>/ttyUSB0` points to it), relays it to the MicroPython process, turns Ctrl-C into SIGINT
(a KeyboardInterrupt in the running program, like the USB interrupt character on the chip) and
restarts the process when the program resets the board (machine.reset, soft reboot, watchdog,
deep sleep), with the matching reset cause.

Only the radio and the sensors are fake: the board joins the WiFi named by `wifi` (any network
when None) and every TCP connection the node opens goes to `network` (the site's broker on
loopback), whatever host it was provisioned with; without `network`, nothing resolves.

The board also has the ESP32's serial bootloader (`hil/esp32/esprom.py`) and 4 MB of SPI flash
(`<state>/spi_flash.bin`). A pseudo-terminal has no DTR/RTS lines to put the chip in download
mode, so the board enters it when esptool's SYNC arrives, and boots again once esptool has
finished (half a second after its last verified write, or 3 s after it went quiet). A `blank`
board has nothing in its SPI flash: it prints the ROM's "invalid header" and has no REPL until
a MicroPython image is flashed. Erasing the whole flash also erases the filesystem (the flash
directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

from gateway.technician import NodeToolError
from gateway.technician.flash import CHIPS, inspect_bytes
from hil.esp32.esprom import FLASH_DEFL_END, FLASH_END, FLASH_SIZE, SPI_FLASH_MD5, EspRomProtocol
from hil.esp32.micropython.exits import SOFT_BOOTS
from hil.esp32.node import FAKES, boot, boot_environment, chip_boot, micropython_binary, next_boot
from hil.ptyline import raw_port

DEFAULT_BOARD_HARDWARE: dict[str, Any] = {
    "i2c": {"35": {"read": "0190"}},  # a BH1750 light sensor at 0x23: 333.3 lx
    "pins": {"27": 0},  # a PIR on GPIO 27, no motion
    "adc": {"34": 40000},  # a battery divider on GPIO 34
    "rssi": -58,
}
ROM_BANNER = (
    "ets Jun  8 2016 00:22:57\r\n\r\nrst:{rst},boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"
    "configsip: 0, SPIWP:0xee\r\nmode:DIO, clock div:2\r\nentry 0x400805f0\r\n"
)
ROM_RESETS = {"power_on": "0x1 (POWERON_RESET)", "reset": "0xc (SW_CPU_RESET)", "watchdog": "0x10 (RTCWDT_RTC_RESET)"}
INTERRUPT_ACK_S = 1.0
ESPTOOL_SYNC = b"\xc0\x00\x08"  # the start of esptool's first SLIP packet: SYNC
DONE_IDLE_S, GAVE_UP_IDLE_S = 0.5, 3.0  # download mode ends this long after esptool's last byte
BLANK_BOOT = "invalid header: 0xffffffff\r\n"


def flashed_version(spi: bytes, chip: str) -> str | None:
    """The version of the MicroPython build for the chip that the SPI flash holds at the chip's offset, if any."""
    try:
        found = inspect_bytes(spi[CHIPS[chip].offset :], Path("spi_flash.bin"), chip)
    except NodeToolError:
        return None
    return found.version if found.chip.name == chip else None


def has_micropython(spi: bytes, chip: str) -> bool:
    """Whether the SPI flash holds a MicroPython build for the chip at the chip's offset."""
    return flashed_version(spi, chip) is not None


class EmulatedBoard:
    def __init__(
        self,
        state: Path,
        *,
        network: tuple[str, int] | None = None,
        wifi: tuple[str, str] | None = None,
        hardware: dict[str, Any] | None = None,
        heap: str = "128K",
        port_link: Path | None = None,
        chip: str = "esp32",
        blank: bool = False,
    ) -> None:
        self.state = state
        self.flash = state / "flash"
        self.port = port_link or state / "ttyUSB0"
        self.network = network
        self.wifi = wifi
        self.hardware = dict(DEFAULT_BOARD_HARDWARE if hardware is None else hardware)
        self.heap = heap
        self.chip = chip
        self.blank = blank
        self.spi = bytearray()  # the SPI flash, loaded in start()
        self.micropython = True
        self.rom: EspRomProtocol | None = None  # set while in download mode
        self._rom_input_at = 0.0
        self._wake = asyncio.Event()
        self.console = bytearray()  # everything the board printed (the last 256 KB)
        self.proc: asyncio.subprocess.Process | None = None
        self._master = self._slave = -1
        self._incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self._interrupted = asyncio.Event()
        self._up = asyncio.Event()  # the running process handles SIGINT itself
        self._exit_code: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._next = "power_on"
        self._chip = "power_on"  # the last chip-level boot (what machine.reset_cause() reports)
        self._last_byte = b""
        self._log: Any = None

    # -- life cycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self.flash.mkdir(parents=True, exist_ok=True)
        self.set_hardware()
        spi_file = self.state / "spi_flash.bin"
        if self.blank and not spi_file.exists():
            spi_file.write_bytes(b"\xff" * FLASH_SIZE)
        if spi_file.exists():  # a board flashed here (or blank); otherwise it came with MicroPython
            self.spi = bytearray(spi_file.read_bytes())
            self.micropython = has_micropython(bytes(self.spi), self.chip)
        else:
            self.spi = bytearray(b"\xff" * FLASH_SIZE)
        self._master, self._slave = raw_port(self.port)
        os.set_blocking(self._master, False)
        self._log = open(self.state / "console.log", "ab")  # noqa: SIM115 - closed in stop()
        asyncio.get_running_loop().add_reader(self._master, self._on_input)
        self._running = True
        self._tasks = [asyncio.create_task(self._supervise()), asyncio.create_task(self._forward())]

    async def stop(self) -> None:
        self._running = False
        await self._kill()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._master >= 0:
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
            os.close(self._slave)
            self._master = self._slave = -1
        with contextlib.suppress(FileNotFoundError):
            self.port.unlink()
        if self._log is not None:
            self._log.close()

    async def power_cycle(self) -> None:
        """Unplug and plug in again: the program dies wherever it was and the board boots from flash."""
        self._next = "power_on"
        self.rom = None
        await self._kill()
        self._wake.set()

    def set_hardware(self, **changes: Any) -> None:
        self.hardware.update(changes)
        (self.state / "hw.json").write_text(json.dumps(self.hardware))

    def describe(self) -> dict[str, Any]:
        return {
            "port": str(self.port),
            "flash": str(self.flash),
            "chip": self.chip,
            "micropython": self.micropython,
            "network": f"{self.network[0]}:{self.network[1]}" if self.network else None,
            "pid": os.getpid(),
        }

    # -- the MicroPython process ----------------------------------------------------------------------

    async def _supervise(self) -> None:
        micropython_binary()  # missing: fail now, saying how to install it, not at the first boot
        while self._running:
            self._wake.clear()
            if self.rom is not None:  # in download mode: the bootloader answers esptool
                await self._wake.wait()
                continue
            mode = self._next
            if mode in ROM_RESETS:
                self._emit(ROM_BANNER.format(rst=ROM_RESETS[mode]).encode())
            if not self.micropython:  # nothing to boot: the ROM complains and waits for a flash or a reset
                self._emit(BLANK_BOOT.encode())
                await self._wake.wait()
                continue
            self._chip = chip_boot(mode, self._chip)
            env = boot_environment(self.state / "hw.json", self._chip)
            env.pop("CITYEDGE_NET", None)
            env.pop("CITYEDGE_WIFI", None)
            if self.network:
                env["CITYEDGE_NET"] = f"{self.network[0]}:{self.network[1]}"
            if self.wifi:
                env["CITYEDGE_WIFI"] = f"{self.wifi[0]}\n{self.wifi[1]}"
            env.pop("CITYEDGE_FIRMWARE", None)
            version = flashed_version(bytes(self.spi), self.chip)
            if version:  # the board says it runs what was flashed (the unix port stands in for it)
                env["CITYEDGE_FIRMWARE"] = version
            self.proc = await boot("chip.py", str(FAKES), mode, flash=self.flash, env=env, heap=self.heap, console=True)
            self._up.clear()
            self._exit_code = None
            status = asyncio.create_task(self._status(self.proc))
            assert self.proc.stdout is not None
            while data := await self.proc.stdout.read(4096):
                self._emit(self._cooked(data))
            code = await self.proc.wait()
            await status
            if self._exit_code is not None:  # what the program asked for, whatever the interpreter did after
                code = self._exit_code
            self._next = next_boot(code, self._next)
            if self._next not in SOFT_BOOTS:
                await asyncio.sleep(0.1)  # a reset takes the chip a moment

    async def _status(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        async for line in proc.stderr:
            word = line.strip()
            if word == b"INT":
                self._interrupted.set()
            elif word == b"UP":
                self._up.set()
            elif word.startswith(b"EXIT "):
                self._exit_code = int(word[5:])
            elif self._exit_code is None:  # MicroPython itself failed (the emulator, not the app): show it
                self._emit(line.replace(b"\n", b"\r\n"))

    async def _kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()

    # -- the serial line ------------------------------------------------------------------------------

    def _on_input(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError:  # nobody has the port open (EIO): nothing to read
            return
        if data:
            self._incoming.put_nowait(data)

    async def _forward(self) -> None:
        """Host to board, in order; a Ctrl-C interrupts the program and nothing after it is sent before that."""
        while True:
            data = await self._incoming.get()
            if self.rom is None and ESPTOOL_SYNC in data:
                await self._enter_download_mode()
                data = data[data.index(ESPTOOL_SYNC) :]
            if self.rom is not None:
                self._rom_input_at = asyncio.get_running_loop().time()
                self._send_raw(self.rom.feed(data))
                continue
            if not self.micropython:
                continue  # a blank chip reads nothing
            while data:
                before, ctrl_c, data = data.partition(b"\x03")
                if before:
                    await self._to_board(before)
                if ctrl_c:
                    await self._interrupt()

    async def _to_board(self, data: bytes) -> None:
        for _ in range(100):  # a board that is resetting takes the bytes once it is back, as USB would
            proc = self.proc
            if proc is not None and proc.returncode is None and proc.stdin is not None:
                with contextlib.suppress(ConnectionError, BrokenPipeError):
                    proc.stdin.write(data)
                    await proc.stdin.drain()
                    return
            await asyncio.sleep(0.02)

    async def _interrupt(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(TimeoutError):  # a board still booting takes the Ctrl-C once it can
            await asyncio.wait_for(self._up.wait(), INTERRUPT_ACK_S)
        if proc.returncode is not None or self._exit_code is not None:
            return
        self._interrupted.clear()
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._interrupted.wait(), INTERRUPT_ACK_S)

    # -- download mode ---------------------------------------------------------------------------------

    async def _enter_download_mode(self) -> None:
        self.rom = EspRomProtocol(self.chip, self.spi)
        self._rom_input_at = asyncio.get_running_loop().time()
        await self._kill()
        self._wake.set()
        task = asyncio.create_task(self._leave_download_mode_when_done(self.rom))
        self._tasks.append(task)

    async def _leave_download_mode_when_done(self, rom: EspRomProtocol) -> None:
        loop = asyncio.get_running_loop()
        while self.rom is rom:
            await asyncio.sleep(0.1)
            idle = loop.time() - self._rom_input_at
            finished = bool(rom.commands) and rom.commands[-1] in (SPI_FLASH_MD5, FLASH_END, FLASH_DEFL_END)
            if idle >= GAVE_UP_IDLE_S or (finished and idle >= DONE_IDLE_S):
                break
        if self.rom is not rom:
            return
        (self.state / "spi_flash.bin").write_bytes(self.spi)
        if rom.erased:  # the filesystem partition went with the rest
            for item in self.flash.iterdir():
                if item.is_dir() and not item.is_symlink():
                    shutil.rmtree(item)
                else:
                    item.unlink()
        self.micropython = has_micropython(bytes(self.spi), self.chip)
        self.rom = None
        self._next = "power_on"  # esptool's hard reset: EN
        self._wake.set()

    def _send_raw(self, data: bytes, patience: int = 10000) -> None:
        """To the port. A full port is retried `patience` times (esptool reads its answers), then the rest is
        dropped: bytes nobody reads go nowhere, as on a UART."""
        view = memoryview(data)
        for _ in range(patience + 1):
            if not view:
                return
            try:
                view = view[os.write(self._master, view) :]
            except BlockingIOError:
                continue
            except OSError:  # EIO: the port is gone
                return

    def _cooked(self, data: bytes) -> bytes:
        """Line ends as MicroPython's console sends them: every \\n as \\r\\n (the unix port writes bare \\n)."""
        out = re.sub(rb"(?<!\r)\n", b"\r\n", data)
        if data.startswith(b"\n") and self._last_byte == b"\r":
            out = out[1:]  # the \r came at the end of the previous chunk
        self._last_byte = data[-1:]
        return out

    def _emit(self, data: bytes) -> None:
        self.console.extend(data)
        del self.console[: max(0, len(self.console) - 262144)]
        if self._log is not None:
            self._log.write(data)
            self._log.flush()
        self._send_raw(data, patience=0)  # console output nobody reads is lost, not queued
