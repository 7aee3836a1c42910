"""Scenarios, the control socket and `cityedge hil serve|ctl` as an integrator runs them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from gateway.config.loader import load_config
from hil.fixtures import SiteFactory
from hil.site.control import ControlServer, request
from hil.site.scenario import gateway_config, load_scenario
from tests.modbus_raw import tcp_exchange, tcp_read

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "hil" / "scenarios" / "eixample-block.yaml"


def test_example_scenario_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hil", "check", str(EXAMPLE)]) == 0
    assert "OK (3 links, 5 devices, 6 steps, 5 expectations)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (
            lambda d: d["devices"][0].update(profile="dali-gateway"),
            "devices[0].profile: unknown profile 'dali-gateway' (did you mean 'dali-modbus-gateway'?)",
        ),
        (
            lambda d: d["devices"][1].update(behaviour="metre"),
            "devices[1].behaviour: unknown behaviour 'metre' (did you mean 'meter'?)",
        ),
        (
            lambda d: d["devices"][1].update(options={"volts": 230}),
            "devices[1].options.volts: behaviour meter has no option 'volts'",
        ),
        (lambda d: d["devices"][1].update(unit=2), "devices[1].unit: unit 2 on link 'rs485-1' is already used"),
        (
            lambda d: d["timeline"][1].update(fault={"timeout": "sometimes"}),
            "timeline[1].fault: fault timeout: expected bool, got 'sometimes'",
        ),
        (
            lambda d: d["timeline"][1].update(stimulus="rain"),
            "timeline[1]: each step does exactly one of: fault, clear, action, stimulus, set, wifi, hardware",
        ),
        (
            lambda d: d["expect"][0].update(point="voltage-l1"),
            "expect[0].point: no point 'voltage-l1' (did you mean 'voltage_l1'?)",
        ),
        (lambda d: d["links"][0].update(parity="even"), "links[0].parity: must be 'N', 'E' or 'O', got 'even'"),
    ],
)
def test_broken_scenarios_are_reported(
    mutation: object, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    mutation(data)  # type: ignore[operator]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["hil", "check", str(path)]) == 2
    lines = [line.split(": ", 1)[1] for line in capsys.readouterr().err.splitlines() if line.startswith(str(path))]
    assert expected in lines


async def test_control_socket(site_factory: SiteFactory, tmp_path: Path) -> None:
    site = await site_factory(
        {
            "links": [{"id": "net", "type": "modbus-tcp"}],
            "devices": [
                {"id": "lamps", "profile": "dali-modbus-gateway", "link": "net", "unit": 1, "params": {"ballasts": 4}}
            ],
        }
    )
    control = ControlServer(site, tmp_path / "ctl.sock")
    await control.start()
    try:
        path = control.path
        assert (await request(path, {"op": "fault", "device": "lamps", "set": {"delay": 0.1}})) == {
            "ok": True,
            "data": {"delay": 0.1},
        }
        assert (await request(path, {"op": "status"}))["data"]["devices"][0]["faults"] == {"delay": 0.1}
        assert (await request(path, {"op": "clear"}))["ok"]
        assert (
            await request(path, {"op": "stimulus", "device": "lamps", "name": "lamp_failure", "args": {"ballast": 1}})
        )["ok"]
        await asyncio.sleep(0.3)
        assert (await request(path, {"op": "get", "device": "lamps", "point": "ballast_1_level"}))["data"] == 0
        bad = await request(path, {"op": "fault", "device": "nope", "set": {}})
        assert bad == {"ok": False, "error": "no emulated device 'nope' (devices: lamps)"}
        assert (await request(path, {"op": "explode"}))["ok"] is False
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"{not json\n")
        answer = json.loads(await reader.readline())
        writer.close()
        assert answer["ok"] is False
    finally:
        await control.stop()
    assert not control.path.exists()


async def test_generated_gateway_config_is_valid(site_factory: SiteFactory, tmp_path: Path) -> None:
    loaded = load_scenario(EXAMPLE)
    data = gateway_config(
        loaded, {"rs485-1": "/dev/pts/99", "relay-net": "127.0.0.1:1502", "water-gw": "127.0.0.1:1503"}
    )
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    assert {d.id for d in config.config.devices} == {d.id for d in loaded.scenario.devices}


@pytest.mark.long
def test_hil_serve_and_ctl_end_to_end(tmp_path: Path) -> None:
    scenario = tmp_path / "site.yaml"
    scenario.write_text(
        yaml.safe_dump(
            {
                "name": "serve-test",
                "links": [{"id": "net", "type": "modbus-tcp"}, {"id": "bus", "type": "modbus-rtu", "baudrate": 19200}],
                "devices": [
                    {"id": "meter", "profile": "eastron-sdm120", "link": "net", "unit": 1},
                    {"id": "level", "profile": "water-level-logger", "link": "bus", "unit": 2},
                ],
            }
        )
    )
    sock = tmp_path / "ctl.sock"
    gw = tmp_path / "gw.yaml"
    cmd = [
        sys.executable,
        "-m",
        "gateway",
        "hil",
        "serve",
        str(scenario),
        "--json",
        "--control",
        str(sock),
        "--gateway-config",
        str(gw),
        "--duration",
        "60",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        links = {link["id"]: link for link in info["links"]}
        pty = links["bus"]["address"]
        assert pty.startswith("/dev/pts/") and os.path.exists(pty)
        port = int(links["net"]["address"].rpartition(":")[2])
        assert load_config(gw).config.links[0].id == "net"

        def ctl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "gateway", "hil", "ctl", "--control", str(sock), *args],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
                cwd=ROOT,
            )

        assert len(asyncio.run(tcp_exchange(port, tcp_read(1, 4, 0, 2)))) == 13
        assert ctl("fault", "meter", "timeout=on").returncode == 0
        assert asyncio.run(tcp_exchange(port, tcp_read(1, 4, 0, 2), wait=0.3)) == b""
        assert ctl("clear", "meter").stdout.strip() == "ok"
        assert 200 < float(ctl("get", "meter", "voltage").stdout) < 260
        wrong = ctl("fault", "meter", "bogus=1")
        assert wrong.returncode == 1 and "unknown fault 'bogus'" in wrong.stderr
        assert ctl("set", "level", "mode").returncode == 2  # usage: set DEVICE POINT VALUE
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert proc.returncode == 0
    assert not sock.exists()
    missing = subprocess.run(
        [sys.executable, "-m", "gateway", "hil", "ctl", "--control", str(sock), "status"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
    )
    assert missing.returncode == 2 and "no site is listening" in missing.stderr
