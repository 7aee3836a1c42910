"""pytest fixtures for the whole suite: a real broker, emulated sites, pty lines.

Enable with `pytest_plugins = ["hil.fixtures"]` in a conftest.py. A tool that the
README's set-up installs (mosquitto) is never skipped over: its absence fails the
test with the command that fixes it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hil.broker import MosquittoBroker, find_mosquitto
from hil.site.emulated import Site
from hil.site.scenario import load_scenario

SiteFactory = Callable[[dict[str, Any]], Awaitable[Site]]

logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


@pytest.fixture
def mosquitto() -> Iterator[MosquittoBroker]:
    """A fresh mosquitto on a free loopback port, stopped after the test."""
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed: run scripts/setup (or: sudo apt-get install mosquitto)")
    with MosquittoBroker() as broker:
        yield broker


@pytest.fixture
async def site_factory(tmp_path: Path) -> AsyncIterator[SiteFactory]:
    """Build and start emulated sites from scenario data; all of them stop after the test."""
    sites: list[Site] = []

    async def make(data: dict[str, Any]) -> Site:
        data = {"name": f"test-{len(sites)}", **data}
        path = tmp_path / f"{data['name']}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        site = Site(load_scenario(path))
        await site.start()
        sites.append(site)
        return site

    yield make
    for site in sites:
        await site.stop()


class BoardProcess:
    """`cityedge hil board` running in its own process: an emulated ESP32 on a serial port."""

    def __init__(
        self,
        directory: Path,
        network: str | None,
        wifi: tuple[str, str] | None,
        chip: str = "esp32",
        blank: bool = False,
    ) -> None:
        command = [str(Path(sys.executable).parent / "cityedge"), "hil", "board", "--dir", str(directory), "--json"]
        env = dict(os.environ)
        command += ["--chip", chip] + (["--blank"] if blank else [])
        if network:
            command += ["--network", network]
        if wifi:
            env["BOARD_WIFI_PASSWORD"] = wifi[1]
            command += ["--wifi", wifi[0], "--wifi-password-env", "BOARD_WIFI_PASSWORD"]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"cityedge hil board did not start (exit {self.proc.wait(10)})")
        info = json.loads(line)
        self.port: str = info["port"]
        self.flash = Path(info["flash"])
        self.console_log = directory / "console.log"

    def press_reset(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def console(self) -> str:
        return self.console_log.read_bytes().decode(errors="replace") if self.console_log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


BoardFactory = Callable[..., BoardProcess]


@pytest.fixture
def board_factory(tmp_path: Path) -> Iterator[BoardFactory]:
    """Start emulated boards: board_factory(network="127.0.0.1:1883", wifi=("ssid", "key")); all stop after the test."""
    boards: list[BoardProcess] = []

    def make(
        network: str | None = None,
        wifi: tuple[str, str] | None = None,
        name: str = "board",
        chip: str = "esp32",
        blank: bool = False,
    ) -> BoardProcess:
        board = BoardProcess(tmp_path / name, network, wifi, chip, blank)
        boards.append(board)
        return board

    yield make
    for board in boards:
        board.stop()
