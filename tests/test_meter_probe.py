"""`cityedge read --protocol iec62056|mbus|ascii` and `cityedge mbus scan`, run as a technician runs them,
against emulated meters and sensors on pseudo-terminals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from gateway.profiles.registry import ProfileRegistry, resolve
from hil.ascii.sensor import AsciiSensor
from hil.iec62056.meter import ModeCMeter
from hil.mbus.meter import MbusMeter
from hil.ptyline import PtyLine
from hil.serialbus import SerialBus
from tests.cli_harness import CITYEDGE, cityedge

REGISTRY = ProfileRegistry()


async def run(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    """The command in a subprocess while this test's event loop keeps the emulators answering."""
    proc = await asyncio.create_subprocess_exec(
        CITYEDGE,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@dataclass
class Line:
    line: PtyLine
    bus: SerialBus

    @property
    def path(self) -> str:
        return self.line.gateway_path


@pytest.fixture
async def line_factory() -> AsyncIterator[object]:
    made: list[Line] = []

    async def make(*devices: object, **settings: object) -> Line:
        line = PtyLine(**settings)  # type: ignore[arg-type]
        await line.start()
        bus = SerialBus(line)
        entry = Line(line, bus)
        made.append(entry)
        for device in devices:
            if callable(device):
                device = device(line)
            bus.attach(device)  # type: ignore[arg-type]
        await bus.start()
        for device in bus.devices:
            if isinstance(device, AsciiSensor):
                device.start(bus)
        return entry

    yield make
    for entry in made:
        for device in entry.bus.devices:
            if isinstance(device, AsciiSensor):
                await device.stop()
        await entry.bus.stop()
        await entry.line.stop()


def _meter(line: PtyLine) -> ModeCMeter:
    meter = ModeCMeter(resolve(REGISTRY.load("iskraemeco-mt174")[0]), line, address="71234567")
    meter.values.update(energy_import=4711.125, energy_import_t1=4000.0, meter_number="71234567", error_code="00")
    return meter


async def test_reading_a_mode_c_meter_without_and_with_its_profile(line_factory: object) -> None:
    line = await line_factory(_meter, baudrate=300, parity="E", bytesize=7, turnaround=0.0, follow_speed=True)  # type: ignore[operator]
    code, out, err = await run(
        "read", "--protocol", "iec62056", "--serial", line.path, "--meter", "71234567", "--timeout", "0.5"
    )
    assert code == 0, err
    assert "meter ISk MT174-0001: offers 9600 baud, reacts in 20 ms; read at 9600 baud" in out
    assert "<STX>0.0.0(71234567)" in out and "1.8.0            0004711.125 kWh" in out
    code, out, err = await run(
        "read", "--protocol", "iec62056", "--serial", line.path, "--meter", "71234567", "--timeout", "0.5",
        "--profile", "iskraemeco-mt174", "--json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    points = {p["point"]: p["value"] for p in report["points"]}
    assert points["energy_import"] == 4711.125 and points["meter_number"] == "71234567"
    assert report["data_sets"]["1.8.1"] == [["0004000.000", "kWh"]] and report["baud"] == 9600
    # a meter that is not there: the sign-on is shown going unanswered, in words
    code, _, err = await run(
        "read", "--protocol", "iec62056", "--serial", line.path, "--meter", "99", "--timeout", "0.3"
    )
    assert code == 1 and "timeout: " in err and "no identification within" in err


async def test_reading_m_bus_meters_and_scanning_the_segment(line_factory: object) -> None:
    heat_profile = resolve(REGISTRY.load("kamstrup-multical-601")[0])
    water_profile = resolve(REGISTRY.load("itron-cyble-mbus")[0])
    heat = lambda line: MbusMeter(heat_profile, line, primary=1, ident="06855817", values={"energy": 37351.0})  # noqa: E731
    water = lambda line: MbusMeter(water_profile, line, ident="12000071", values={"volume": 123.49})  # noqa: E731
    line = await line_factory(heat, water, baudrate=2400, parity="E", turnaround=0.0)  # type: ignore[operator]
    code, out, err = await run("read", "--protocol", "mbus", "--serial", line.path, "--meter", "1", "--timeout", "0.2")
    assert code == 0, err
    assert "meter 06855817.KAM.08.04 (heat (outlet)), status 0, 1 telegram(s)" in out
    assert "energy                   instantaneous" in out and "37351000 Wh" in out
    assert out.startswith("answer 1: e5\nanswer 2: 68 ")  # E5 to SND_NKE, then the RSP_UD
    code, out, err = await run(
        "read", "--protocol", "mbus", "--serial", line.path, "--meter", "12000071", "--timeout", "0.2",
        "--profile", "itron-cyble-mbus", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert {p["point"]: p["value"] for p in json.loads(out)["points"]}["volume"] == 123.49
    code, out, err = await run("mbus", "scan", "--serial", line.path, "--timeout", "0.1", "--addresses", "0-3")
    assert code == 0, err
    assert "06855817.KAM.08.04" in out and "12000071.ACW.14.07" in out
    assert 'address: "12000071.ACW.14.07"' in out  # a configuration line to paste
    assert "address 1: 06855817.KAM.08.04" in err  # progress as it goes
    code, _, err = await run("read", "--protocol", "mbus", "--serial", line.path, "--meter", "1234")
    assert code == 2 and "neither a primary address (0-250) nor a secondary one" in err


async def test_reading_text_sensors_streaming_and_polled(line_factory: object) -> None:
    gill = resolve(REGISTRY.load("gill-windsonic")[0])
    vaisala = resolve(REGISTRY.load("vaisala-hmp155")[0])
    wind = await line_factory(  # type: ignore[operator]
        lambda line: AsciiSensor(gill, line, values={"direction": 229, "speed": 2.74, "status": 0}, period=0.1)
    )
    code, out, err = await run("read", "--protocol", "ascii", "--serial", wind.path, "--profile", "gill-windsonic")
    assert code == 0, err
    assert "received: '<STX>Q,229,002.74,M,00,<ETX>16'" in out and "direction   229 °" in out
    air = await line_factory(lambda line: AsciiSensor(vaisala, line, values={"humidity": 63.2, "temperature": 11.4}))  # type: ignore[operator]
    code, out, err = await run("read", "--protocol", "ascii", "--serial", air.path, "--request", "SEND\\r")
    assert code == 0, err
    assert 'fields: line="RH= 63.2 %RH T= 11.4 \'C"' in out
    code, _, err = await run("read", "--protocol", "ascii", "--serial", air.path)
    assert code == 2 and "needs --profile" in err


def test_a_meter_protocol_needs_a_serial_port() -> None:
    result = cityedge("read", "--protocol", "iec62056", "--tcp", "127.0.0.1:1")
    assert result.returncode == 2 and "--protocol iec62056 reads a serial line: give --serial DEV" in result.stderr
    result = cityedge("read", "--tcp", "127.0.0.1:1", "--profile", "eastron-sdm630")
    assert result.returncode == 2 and "Modbus needs --unit" in result.stderr
