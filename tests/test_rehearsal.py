"""The technician page followed step by step on the emulated board, with nothing downloaded (field trial, 4).

The session block of docs/technician/set-up-a-node.md is run as printed, line by line: its
exports, its background programs (mosquitto, the emulated board), its setup commands, the
reset. Only the rehearsal broker's port (a free one instead of 1884) and /tmp (this test's
own directory) are changed, so tests can run side by side. Then setup is run until four
in a row have passed, and the page's wrong-password rehearsal is followed too.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "technician" / "set-up-a-node.md"
SESSIONS = [("set-up-a-node.md", "cityedge hil image")]  # (page, text in the block): the sessions tested here
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)


def _session() -> list[str]:
    body = next(b for lang, b in FENCE.findall(PAGE.read_text()) if lang == "sh" and "cityedge hil image" in b)
    joined = body.replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.split("  #")[0].strip()]


def _inventory() -> str:
    return next(b for lang, b in FENCE.findall(PAGE.read_text()) if lang == "yaml" and "# nodes.yaml" in b)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for(path: Path, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.1)


@pytest.mark.long
def test_the_rehearsal_on_the_technicians_page_as_printed(tmp_path: Path) -> None:
    port = str(_free_port())
    env = {**os.environ}
    (tmp_path / "nodes.yaml").write_text(_inventory())
    background: list[subprocess.Popen[bytes]] = []
    outputs: list[str] = []

    def here(line: str) -> str:
        """The page's line for this test: its own port and directory, then this checkout's command."""
        line = line.replace("1884", port).replace("/tmp/", f"{tmp_path}/")
        return line.replace(".venv/bin/cityedge", str(ROOT / ".venv" / "bin" / "cityedge"))

    def run(line: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            shlex.split(line), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False
        )
        outputs.append(result.stdout + result.stderr)
        return result

    try:
        for line in _session():
            if line.startswith("export "):
                for pair in shlex.split(line)[1:]:
                    key, _, value = pair.partition("=")
                    env[key] = value
            elif line.endswith("&"):
                argv = shlex.split(here(line[:-1]))
                background.append(subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL))
                if "hil board" in line:
                    _wait_for(tmp_path / "board" / "ttyUSB0")
                else:
                    time.sleep(0.5)  # the broker is listening
            elif line.startswith("kill -HUP %"):
                background[int(line.rsplit("%", 1)[1]) - 1].send_signal(signal.SIGHUP)
            else:
                result = run(here(line))
                assert result.returncode == 0, result.stdout + result.stderr
        first, second = (o for o in outputs if "CityEdge node setup" in o)
        assert "1 flash      micropython v1.24.1-rehearsal for ESP32" in first and "PASS  pole-17-a" in first
        assert "1 flash      skipped (MicroPython " in second  # said once the board answered as MicroPython
        banners = (tmp_path / "board" / "console.log").read_bytes().decode(errors="replace")
        assert "MicroPython v1.24.1-rehearsal on " in banners  # the board says what was flashed onto it
        assert "PASS  pole-17-a" in second
        setup = next(line for line in _session() if "node setup" in line and "--firmware" not in line)
        for _ in range(2):  # four in a row, as a technician fixing a sensor's wiring does
            again = run(here(setup))
            assert again.returncode == 0 and "PASS  pole-17-a" in again.stdout, again.stdout
            assert "SAFE MODE" not in again.stdout

        # The wrong-password rehearsal the page describes.
        board2 = f"{ROOT}/.venv/bin/cityedge hil board --dir {tmp_path}/board2 --network 127.0.0.1:{port} "
        board2 += "--wifi cabinet-17 --wifi-password-env REAL_WIFI_PASSWORD"
        env["REAL_WIFI_PASSWORD"] = "not-what-the-inventory-gives"
        background.append(subprocess.Popen(shlex.split(board2), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL))
        _wait_for(tmp_path / "board2" / "ttyUSB0")
        started = time.monotonic()
        wrong = run(here(setup.replace("/tmp/board/", "/tmp/board2/")))
        assert time.monotonic() - started < 10, wrong.stdout
        assert wrong.returncode == 1 and "FAIL  pole-17-a: the WiFi password is wrong" in wrong.stdout
    finally:
        for proc in reversed(background):
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
