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
    assert out.splitlines()[-1].startswith("  rs485-1: the bus is busy ")
    assert "  3 requests per cycle for 17 points (one request per point would be 17)" in out
    code, out, _ = await cityedge("plan", "-c", "examples/cabinet-17.yaml", "--device", "feeder-relay", "--json")
    (relay,) = json.loads(out)["devices"]
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


async def test_read_and_write_find_profiles_in_a_profile_dir(net: str, tmp_path: Path) -> None:
    """`--profile-dir DIR` (it crashed with "'str' object has no attribute 'is_dir'")."""
    shipped = (ROOT / "device_profiles" / "dali-modbus-gateway.yaml").read_text()
    (tmp_path / "site-lamps.yaml").write_text(shipped.replace("name: dali-modbus-gateway", "name: site-lamps", 1))
    code, out, err = await cityedge(
        "read", "--tcp", net, "--unit", "5", "--profile", "site-lamps", "--profile-dir", str(tmp_path),
        "--param", "ballasts=2", "--point", "ballast_0_arc_power", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert [row["point"] for row in json.loads(out)] == ["ballast_0_arc_power"]
    code, out, err = await write_lamp(net, "ballast_0_arc_power", "30", "--profile-dir", str(tmp_path))
    assert code == 0, err  # the shipped name still resolves with an extra directory
    code, _, err = await cityedge(
        "read", "--tcp", net, "--unit", "5", "--profile", "site-lamps", "--profile-dir", str(tmp_path / "none")
    )
    assert code == 2 and "unknown profile 'site-lamps'" in err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--tcp", "127.0.0.1:1", "--unit", "300"], "a Modbus unit id is 0..255, not 300"),
        (["--tcp", "127.0.0.1:1", "--unit", "four"], "'four' is not a whole number"),
        (["--serial", "/dev/ttyNOPE0", "--unit", "0"], "--unit 0: a device on a serial bus answers to 1..247"),
        (["--serial", "/dev/ttyNOPE0", "--unit", "248"], "--unit 248: a device on a serial bus answers to 1..247"),
        (["--tcp", "127.0.0.1:http", "--unit", "1"], "the port must be a number from 1 to 65535"),
        (["--tcp", "127.0.0.1:70000", "--unit", "1"], "the port must be a number from 1 to 65535"),
        (["--tcp", ":502", "--unit", "1"], "a host name or address is missing"),
        (["--tcp", "127.0.0.1:1", "--unit", "1", "--timeout", "soon"], "bad duration 'soon'"),
        (["--tcp", "127.0.0.1:1", "--unit", "1", "--address", "70000"], "a register address is 0..65535, not 70000"),
        (["--tcp", "127.0.0.1:1", "--unit", "1", "--address", "65535", "--count", "2"], "runs past the last address"),
        (["--tcp", "127.0.0.1:1", "--unit", "1", "--address", "0", "--count", "126"], "at most 125"),
        (["--serial", "/dev/ttyNOPE0", "--unit", "1", "--baudrate", "0"], "the value is 1..10000000, not 0"),
    ],
)
async def test_bad_options_are_usage_errors_in_plain_words(args: list[str], says: str) -> None:
    if "--address" not in args:
        args = [*args, "--address", "0"]
    code, out, err = await cityedge("read", *args, "--table", "holding")
    assert code == 2, (out, err)
    assert says in err
    for raw in ("Traceback", "struct.error", "pydantic", "validation error", "input_value"):
        assert raw not in err


async def test_tcp_without_a_port_means_port_502() -> None:
    code, _, err = await cityedge(
        "read", "--tcp", "127.0.0.1", "--unit", "1", "--table", "holding", "--address", "0", "--timeout", "0.3"
    )
    assert code == 1 and "127.0.0.1:502" in err


async def test_a_timeout_over_tcp_suggests_rtu_over_tcp_when_that_answers(site_factory: SiteFactory) -> None:
    site = await site_factory(
        {
            "links": [{"id": "converter", "type": "modbus-rtu-tcp"}],
            "devices": [{"id": "flow", "profile": "magflow-meter", "link": "converter", "unit": 4}],
        }
    )
    converter = site.endpoint_addresses()["converter"]
    read = ("read", "--unit", "4", "--table", "holding", "--address", "600", "--timeout", "0.5")
    code, _, err = await cityedge(*read, "--tcp", converter)
    assert code == 1 and "timeout" in err
    assert f"hint: {converter} answers RTU frames" in err and f"use --rtu-tcp {converter}" in err
    code, out, err = await cityedge(*read, "--rtu-tcp", converter)
    assert "0.042" in out or "registers at 600" in out
    assert code == 0 and "hint" not in err
    code, _, err = await cityedge(*read, "--tcp", converter, "--unit", "9")  # nobody at 9 either way: no hint
    assert code == 1 and "hint" not in err


async def test_plan_shows_bus_time_and_warns_when_a_line_cannot_keep_up(tmp_path: Path) -> None:
    """Field trial, integrator 11: the read-plan page's formula, done by `plan` for every serial line."""
    config = tmp_path / "site.yaml"
    meters = "".join(
        f"  - {{id: m{i}, profile: eastron-sdm630, link: slow, unit: {i}, poll: 1s}}\n" for i in range(1, 7)
    )
    config.write_text(
        "gateway: {id: t}\nlinks:\n"
        "  - {id: slow, type: modbus-rtu, device: /dev/ttyUSB0, baudrate: 2400, parity: N}\n"
        "  - {id: net, type: modbus-tcp, host: 127.0.0.1}\n"
        f"devices:\n{meters}  - {{id: far, profile: eastron-sdm630, link: net, unit: 1}}\n"
    )
    code, out, err = await cityedge("plan", "-c", str(config), "--json")
    assert code == 0, err
    plan = json.loads(out)
    m1 = next(d for d in plan["devices"] if d["device"] == "m1")
    counts = [r["count"] for r in m1["groups"][0]["requests"]]
    char, silence = 10 / 2400, 3.5 * 10 / 2400  # 8N1 at 2400 baud; t3.5 is 3.5 characters below 19200
    expected = sum((13 + 2 * n) * char + 2 * silence for n in counts)
    assert m1["groups"][0]["bus_time_s"] == pytest.approx(expected, rel=1e-6)
    assert "bus_time_s" not in next(d for d in plan["devices"] if d["device"] == "far")["groups"][0]  # TCP
    assert plan["links"]["slow"]["bus_busy"] == pytest.approx(6 * expected, rel=1e-4) and "net" not in plan["links"]
    assert 6 * expected > 1 and len(plan["warnings"]) == 1
    assert plan["warnings"][0].startswith("link slow (modbus-rtu /dev/ttyUSB0 2400 8N1) needs")
    code, out, _ = await cityedge("plan", "-c", str(config))
    assert f"{1000 * expected:.1f} ms of bus time" in out
    assert "warning: link slow" in out and "cannot all be polled at their intervals" in out
    config.write_text(config.read_text().replace("poll: 1s", "poll: 10s"))
    code, out, _ = await cityedge("plan", "-c", str(config), "--json")
    assert json.loads(out)["warnings"] == []
