"""`cityedge hil run`: site, gateway and broker together, expectations checked, a readable verdict."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hil.fixtures import SiteFactory

ROOT = Path(__file__).resolve().parent.parent


async def hil_run(path: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "hil",
        "run",
        str(path),
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode()


@pytest.mark.long
async def test_scenario_with_a_real_device_in_the_loop(site_factory: SiteFactory, tmp_path: Path) -> None:
    # A separately running device stands in for real hardware on the bench.
    bench = await site_factory(
        {
            "links": [{"id": "plc", "type": "modbus-tcp"}],
            "devices": [{"id": "real-relay", "profile": "feeder-protection-relay", "link": "plc", "unit": 9}],
        }
    )
    scenario: dict[str, Any] = {
        "name": "loop",
        "links": [
            {"id": "bus", "type": "modbus-rtu", "baudrate": 38400},
            {"id": "plant", "type": "modbus-tcp", "hardware": bench.endpoint_addresses()["plc"]},
        ],
        "devices": [
            {"id": "meter", "profile": "eastron-sdm120", "link": "bus", "unit": 1, "poll": 0.5},
            {"id": "relay", "profile": "feeder-protection-relay", "link": "plant", "unit": 9, "poll": 0.5},
        ],
        "timeline": [
            {"at": "3s", "device": "meter", "fault": {"timeout": True}},
            {"at": "6s", "device": "meter", "clear": True},
        ],
        "expect": [
            {"device": "meter", "point": "voltage", "value": 230, "tolerance": 10, "between": ["0.5s", "3s"]},
            {"device": "meter", "availability": "offline", "between": ["3s", "6s"]},
            {"device": "meter", "state": "online", "between": ["6s", "9s"]},
            {"device": "relay", "point": "breaker_closed", "value": True, "between": ["1s", "9s"]},
        ],
        "duration": "9s",
    }
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(scenario, sort_keys=False))
    code, out = await hil_run(path)
    assert code == 0, out
    assert "result: 4 passed, 0 failed" in out
    assert "PASS  relay breaker_closed = True between 1s and 9s" in out
    # Progress as it happened, in time order, before the report: the steps, then each verdict as its window closed.
    progress = [line for line in out.splitlines() if line.startswith("t=")]
    parsed = [re.match(r"t=\s*([\d.]+)s\s+(\w+)\s", line) for line in progress]
    assert sorted(m.group(2) for m in parsed if m) == ["PASS"] * 4 + ["step"] * 2
    fault = next(line for line in progress if "fault=" in line)
    assert "device=meter fault={'timeout': True}" in fault and fault.startswith("t=  3.0s")
    times = [float(m.group(1)) for m in parsed if m]
    assert times == sorted(times) and out.index(progress[-1]) < out.index("result: 4 passed")
    assert bench.devices["real-relay"].stats.reads > 5  # the gateway really polled the "hardware"


async def test_failed_expectations_say_what_was_seen(tmp_path: Path) -> None:
    scenario = {
        "name": "fails",
        "links": [{"id": "net", "type": "modbus-tcp"}],
        "devices": [{"id": "m", "profile": "eastron-sdm120", "link": "net", "unit": 1, "poll": 0.5}],
        "expect": [
            {"device": "m", "point": "voltage", "value": 110, "tolerance": 5, "between": ["1s", "3s"]},
            {"device": "m", "availability": "offline", "between": ["1s", "3s"]},
        ],
        "duration": "3s",
    }
    path = tmp_path / "fails.yaml"
    path.write_text(yaml.safe_dump(scenario))
    code, out = await hil_run(path)
    assert code == 1
    assert "FAIL  m voltage = 110 ±5 between 1s and 3s (seen: " in out
    assert "FAIL  m availability offline between 1s and 3s (seen: online)" in out
    assert "result: 0 passed, 2 failed" in out


@pytest.mark.long
async def test_scenario_with_an_esp32_node_losing_its_wifi(tmp_path: Path) -> None:
    scenario = {
        "name": "pole",
        "nodes": [{"id": "pole-1", "config": {"interval": 1}}],
        "timeline": [
            {"at": "4s", "node": "pole-1", "hardware": {"i2c": {"35": {"read": "0C00"}}}},
            {"at": "6s", "node": "pole-1", "wifi": "off"},
            {"at": "20s", "node": "pole-1", "wifi": "on"},
        ],
        "expect": [
            {"device": "pole-1", "point": "illuminance", "value": 333.3, "tolerance": 0.1, "between": ["1s", "4s"]},
            {"device": "pole-1", "point": "illuminance", "value": 2560.0, "tolerance": 0.1, "between": ["4s", "8s"]},
            {"device": "pole-1", "availability": "offline", "between": ["8s", "20s"]},
            {"device": "pole-1", "availability": "online", "between": ["21s", "30s"]},
        ],
        "duration": "30s",
    }
    path = tmp_path / "pole.yaml"
    path.write_text(yaml.safe_dump(scenario, sort_keys=False))
    code, out = await hil_run(path)
    assert code == 0, out
    assert "result: 4 passed, 0 failed" in out


@pytest.mark.long
async def test_a_night_in_barcelona_on_a_fast_clock(tmp_path: Path) -> None:
    """The shipped scenario, 1800 times faster than real time: ten hours of lighting in twenty seconds, with the
    switch points of the program and a lamp failure's alarm judged in simulated seconds."""
    scenario = yaml.safe_load((ROOT / "hil/scenarios/night-in-barcelona.yaml").read_text())
    scenario["clock"]["speed"] = 1800
    path = tmp_path / "night.yaml"
    path.write_text(yaml.safe_dump(scenario, sort_keys=False))
    code, out = await hil_run(path)
    assert code == 0, out
    assert "result: 7 passed, 0 failed" in out
    assert "PASS  lighting street at 50 between 14100s and 30000s" in out
    assert "PASS  alarm lamps.lamp-failure.ballast_3_lamp_failure active" in out
    step = next(line for line in out.splitlines() if "stimulus=lamp_failure" in line)
    at = float(re.match(r"t=\s*([\d.]+)s", step).group(1))  # type: ignore[union-attr]
    assert 7200 <= at < 7200 + 1800, step  # at 23:00, give or take a real second


async def test_a_scenario_that_expects_the_wrong_night_fails_and_says_what_it_saw(tmp_path: Path) -> None:
    scenario = yaml.safe_load((ROOT / "hil/scenarios/night-in-barcelona.yaml").read_text())
    scenario["clock"]["speed"] = 3000
    scenario["timeline"] = []
    scenario["expect"] = [
        {"lighting": "street", "value": 0, "between": ["1h", "2h"]},  # on since 21:40: 100
        {"alarm": "lamps.lamp-failure.ballast_3_lamp_failure", "between": ["0s", "2h"]},  # no lamp fails
    ]
    scenario["duration"] = "2h"
    path = tmp_path / "wrong.yaml"
    path.write_text(yaml.safe_dump(scenario, sort_keys=False))
    code, out = await hil_run(path)
    assert code == 1, out
    assert "FAIL  lighting street at 0 between 3600s and 7200s (seen: 100.0)" in out, out
    assert "FAIL  alarm lamps.lamp-failure.ballast_3_lamp_failure active between 0s and 7200s (seen: not active)" in out


def test_hostile_scenario_clocks_and_automation_are_refused_at_their_line(tmp_path: Path) -> None:
    base = (ROOT / "hil/scenarios/night-in-barcelona.yaml").read_text()
    cases = [
        ('clock: {start: "2026-06-27T21:00:00+02:00", speed: 600}', 'clock: {start: "2026-06-27T21:00:00", speed: 5}',
         "start: give the time with its offset"),
        ('clock: {start: "2026-06-27T21:00:00+02:00", speed: 600}', 'clock: {start: "2026-06-27T21:00:00Z", speed: 0}',
         "clock.speed: must be greater than or equal to 1, got 0"),
        ("{lighting: street, value: 0, between: [0s, 30m]}", "{lighting: stret, value: 0, between: [0s, 30m]}",
         "'stret' is not a lighting target"),
        ("{lighting: street, value: 0, between: [0s, 30m]}", "{lighting: street, between: [0s, 30m]}",
         "a lighting expectation gives the level as 'value'"),
        ("{lighting: street, value: 0, between: [0s, 30m]}", "{alarm: x, value: 1, between: [0s, 30m]}",
         "an alarm expectation says only 'active'"),
        ("{at: sunset+10m, level: 100}", "{at: sunset+10m, level: 101}", "level: must be between 0 and 100"),
    ]  # fmt: skip
    from gateway.common.problems import ConfigError
    from hil.site.scenario import load_scenario

    for old, new, says in cases:
        assert old in base, old
        path = tmp_path / "bad.yaml"
        path.write_text(base.replace(old, new, 1))
        line = base[: base.index(old)].count("\n") + 1
        try:
            load_scenario(path)
        except ConfigError as exc:
            told = str(exc)
        else:
            raise AssertionError(f"{new} was accepted")
        assert says in told and f"{path}:{line}:" in told, (new, told)
