"""`cityedge plan`, `cityedge read` and `cityedge write` as an integrator runs them, against emulators."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from hil.fixtures import SiteFactory

ROOT = Path(__file__).resolve().parent.parent


async def cityedge(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_plan_of_the_shipped_example() -> None:
    code, out, _ = await cityedge("plan", "-c", "examples/cabinet-17.yaml")
    assert code == 0
    assert "    1  04  input  0      18     voltage_l1 voltage_l2 voltage_l3 current_l1 ... (9 points)" in out
    assert "  3 requests per cycle for 17 points (one request per point would be 17)" in out
    code, out, _ = await cityedge("plan", "-c", "examples/cabinet-17.yaml", "--device", "feeder-relay", "--json")
    (relay,) = json.loads(out)
    assert relay["requests"] == 1 and relay["points"] == 14  # the write-only breaker command is not polled
    assert relay["groups"][0]["requests"][0] == {
        "unit": 3,
        "function": 3,
        "table": "holding",
        "start": 256,
        "count": 10,
        "points": [
            "check_word",
            "status_1",
            "breaker_closed",
            "breaker_open",
            "tripped",
            "remote_enabled",
            "status_2",
            "status_3",
            "status_4",
            "logic_inputs",
            "current_l1",
            "current_l2",
            "current_l3",
            "current_residual",
        ],
    }
    code, _, err = await cityedge("plan", "-c", "examples/cabinet-17.yaml", "--device", "feeder-metre")
    assert code == 2 and "did you mean 'feeder-meter'" in err


@pytest.fixture
async def net(site_factory: SiteFactory) -> str:
    site = await site_factory(
        {
            "links": [{"id": "net", "type": "modbus-tcp"}],
            "devices": [
                {
                    "id": "flow",
                    "profile": "magflow-meter",
                    "link": "net",
                    "unit": 4,
                    "behaviour": "static",
                    "values": {"flow": 0.042},
                },
                {
                    "id": "lamps",
                    "profile": "dali-modbus-gateway",
                    "link": "net",
                    "unit": 5,
                    "params": {"ballasts": 2},
                    "options": {"fade_time": 0},
                },
            ],
        }
    )
    return site.endpoint_addresses()["net"]


async def test_read_with_a_profile(net: str) -> None:
    code, out, _ = await cityedge("read", "--tcp", net, "--unit", "4", "--profile", "magflow-meter")
    assert code == 0
    assert "flow                0.042 m³/s" in out
    code, out, _ = await cityedge(
        "read", "--tcp", net, "--unit", "4", "--profile", "magflow-meter", "--point", "total_forward", "--json"
    )
    assert json.loads(out) == [{"point": "total_forward", "value": 152.25, "unit": "m³", "error": None}]


async def test_read_raw_in_every_byte_order_finds_the_right_one(net: str) -> None:
    code, out, _ = await cityedge(
        "read",
        "--tcp",
        net,
        "--unit",
        "4",
        "--table",
        "holding",
        "--address",
        "600",
        "--type",
        "float32",
        "--all-orders",
        "--json",
    )
    assert code == 0
    result = json.loads(out)
    assert result["decoded"]["CDAB"] == 0.042  # the flow meter sends the low word first
    assert result["decoded"]["ABCD"] != 0.042
    assert len(result["registers"]) == 2


async def write_lamp(net: str, point: str, value: str, *extra: str) -> tuple[int, str, str]:
    """`cityedge write` to the emulated DALI gateway on unit 5."""
    return await cityedge(
        "write",
        "--tcp",
        net,
        "--unit",
        "5",
        "--profile",
        "dali-modbus-gateway",
        *extra,
        "--point",
        point,
        "--value",
        value,
    )


async def test_write_validates_and_reads_back(net: str) -> None:
    code, out, _ = await write_lamp(net, "ballast_1_arc_power", "40", "--param", "ballasts=2")
    assert (code, out.strip()) == (0, "ballast_1_arc_power: wrote 40, reads back 40")
    code, _, err = await write_lamp(net, "ballast_1_arc_power", "140")
    assert code == 2 and "out_of_range: ballast_1_arc_power must be within 0..100, got 140" in err
    code, _, err = await write_lamp(net, "ballast_1_level", "1")
    assert code == 2 and "read_only" in err


async def test_probe_errors_are_plain(net: str) -> None:
    code, _, err = await cityedge(
        "read", "--tcp", net, "--unit", "9", "--timeout", "0.3", "--table", "holding", "--address", "0"
    )
    assert code == 1 and "timeout" in err
    code, _, err = await cityedge("read", "--tcp", "127.0.0.1:1", "--unit", "1", "--table", "holding", "--address", "0")
    assert code == 1 and "refused" in err
    code, _, err = await cityedge(
        "read", "--serial", "/dev/ttyNOPE0", "--unit", "1", "--table", "holding", "--address", "0"
    )
    assert code == 1 and "no serial port /dev/ttyNOPE0" in err
    code, _, err = await cityedge("read", "--tcp", net, "--unit", "4")
    assert code == 2 and "give --profile, or --table and --address" in err
