"""ASCII line sensors: lines from the manuals, checksums against independent implementations, hostile lines,
and streaming and polled sensors on emulated ports read through the gateway on a real mosquitto."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pynmea2
import pytest
from crccheck.crc import Crc16Modbus, Crc16Xmodem
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.app import Gateway
from gateway.common.problems import ConfigError
from gateway.profiles.registry import ProfileRegistry, load_profile, resolve
from gateway.south.ascii.lines import LineError, LineSpec, build_line, checksum, parse_line
from hil.ascii.sensor import AsciiSensor
from hil.broker import MosquittoBroker
from hil.ptyline import PtyLine
from hil.serialbus import SerialBus
from tests.mqtt_harness import Watcher, plain_config, start_gateway

BASE = "cityedge/hard"
REGISTRY = ProfileRegistry()


def _spec(name: str) -> LineSpec:
    spec: LineSpec = REGISTRY.load(name)[0].line  # type: ignore[attr-defined]
    return spec


def test_the_manuals_lines_read_as_the_manuals_say() -> None:
    # Gill WindSonic manual, Gill format polar continuous: <STX>Q,229,002.74,M,00,<ETX>16
    gill = b"\x02Q,229,002.74,M,00,\x0316\r\n"
    assert build_line(_spec("gill-windsonic"), {"direction": 229, "speed": 2.74, "status": 0}) == gill
    assert parse_line(_spec("gill-windsonic"), gill) == {0: "Q", 1: "229", 2: "002.74", 3: "M", 4: "00", 5: ""}
    # MaxBotix HRXL datasheet: R, four digits of millimetres, CR
    assert parse_line(_spec("maxbotix-hrxl-maxsonar-wr"), b"R1234\r") == {"range": "1234"}
    # Vaisala HMP155 user's guide, SEND in the default form
    fields = parse_line(_spec("vaisala-hmp155"), b"RH= 23.8 %RH T= 19.2 'C\r\n")
    assert fields == {"humidity": "23.8", "temperature": "19.2"}


NMEA = LineSpec(start="$", terminator="\r\n", delimiter=",", checksum={"kind": "xor", "separator": "*"})  # type: ignore[arg-type]


def test_a_classic_nmea_sentence_checks_as_pynmea2_says() -> None:
    sentence = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
    assert pynmea2.parse(sentence).timestamp.hour == 12  # pynmea2 accepts it: the checksum is right
    assert parse_line(NMEA, (sentence + "\r\n").encode())[2] == "4807.038"
    with pytest.raises(LineError) as caught:
        parse_line(NMEA, (sentence[:-1] + "8\r\n").encode())
    assert caught.value.reason == "checksum"


_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="*$"), max_size=80)


@given(_text)
def test_our_xor_is_nmeas_checksum(text: str) -> None:
    assert checksum("xor", text.encode()) == pynmea2.NMEASentence.checksum(text)


@given(st.binary(max_size=200))
def test_our_crcs_are_crccheck_s(data: bytes) -> None:
    assert checksum("crc16-modbus", data) == Crc16Modbus.calc(data)
    assert checksum("crc16-ccitt", data) == Crc16Xmodem.calc(data)
    assert checksum("sum8", data) == sum(data) % 256


SPECS = ["gill-windsonic", "maxbotix-hrxl-maxsonar-wr", "vaisala-hmp155"]


@given(st.sampled_from(SPECS), st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_random_bytes_are_a_classified_error_never_a_crash(name: str, data: bytes) -> None:
    with contextlib.suppress(LineError):
        fields = parse_line(_spec(name), data)
        assert isinstance(fields, dict)


@given(st.integers(0, 359), st.floats(0, 60), st.data())
@settings(max_examples=200, deadline=None)
def test_a_damaged_character_never_changes_a_value(direction: int, speed: float, data: st.DataObject) -> None:
    spec = _spec("gill-windsonic")
    good = build_line(spec, {"direction": direction, "speed": speed, "status": 0})
    damaged = bytearray(good)
    at = data.draw(st.integers(0, len(good) - 1))
    damaged[at] = data.draw(st.integers(0x20, 0x7E).filter(lambda b: b != good[at]))
    with contextlib.suppress(LineError):
        assert parse_line(spec, bytes(damaged)) == parse_line(spec, good)  # only an equivalent digit (a/A) passes


def test_a_profile_whose_points_miss_the_pattern_is_refused_at_the_point(tmp_path: Path) -> None:
    path = tmp_path / "probe.yaml"
    path.write_text(
        "name: probe\nmanufacturer: X\nmodel: Y\ndescription: d\nsource: s\nprotocol: ascii\n"
        "line: {pattern: '^T=(?P<t>[0-9.]+)$', terminator: \"\\r\"}\n"
        "points:\n  temperature: {unit: °C}\n  bad: {capture: x}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_profile(path)
    shown = str(caught.value)
    assert "points.temperature: the line's pattern has no group 'temperature' (it has: t)" in shown
    assert "points.bad.capture: the line's pattern has no group 'x'" in shown
    path.write_text(path.read_text().replace("(?P<t>[0-9.]+)", "(?P<t>[0-9.]+"))
    with pytest.raises(ConfigError) as caught:
        load_profile(path)
    assert "line.pattern" in str(caught.value) and "not a regular expression" in str(caught.value)


# -- sensors on emulated ports, through the gateway -------------------------------------------------


@dataclass
class Mast:
    """A weather and level mast: three sensors, each on a port of its own."""

    lines: dict[str, PtyLine]
    buses: list[SerialBus]
    sensors: dict[str, AsciiSensor]


@pytest.fixture
async def mast() -> AsyncIterator[Mast]:
    lines, buses, sensors = {}, [], {}
    for name, values in (
        ("maxbotix-hrxl-maxsonar-wr", {"range": 1850}),
        ("gill-windsonic", {"direction": 229, "speed": 2.74, "status": 0, "node": "Q", "speed_unit": "M"}),
        ("vaisala-hmp155", {"humidity": 23.8, "temperature": 19.2}),
    ):
        line = PtyLine(9600)
        await line.start()
        bus = SerialBus(line)
        sensor = AsciiSensor(resolve(REGISTRY.load(name)[0]), line, values=values, period=0.15)
        bus.attach(sensor)
        await bus.start()
        sensor.start(bus)
        lines[name], sensors[name] = line, sensor
        buses.append(bus)
    try:
        yield Mast(lines, buses, sensors)
    finally:
        for sensor in sensors.values():
            await sensor.stop()
        for bus in buses:
            await bus.stop()
        for line in lines.values():
            await line.stop()


@pytest.mark.long
async def test_streaming_and_polled_sensors_through_the_gateway_with_their_faults(
    mast: Mast, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    ids = {"maxbotix-hrxl-maxsonar-wr": "level", "gill-windsonic": "wind", "vaisala-hmp155": "air"}
    path = plain_config(
        tmp_path / "gw.yaml",
        mosquitto,
        links=[
            {"id": f"port-{ids[n]}", "type": "ascii-serial", "device": line.gateway_path, "timeout": 0.6}
            for n, line in mast.lines.items()
        ],
        devices=[{"id": ids[n], "profile": n, "link": f"port-{ids[n]}", "poll": 0.4} for n in mast.lines],
    )
    w = Watcher(mosquitto)
    await w.start()
    gateway: Gateway = await start_gateway(path)
    try:

        def state(device: str, key: str, value: object, since: int = 0) -> object:
            return w.wait_for(
                lambda s: s.topic == f"{BASE}/{device}/state" and s.json().get("values", {}).get(key) == value,
                since=since,
                what=f"{device} {key}={value}",
            )

        await state("level", "range", 1850)
        wind = await state("wind", "direction", 229)
        assert wind.json()["values"] == {"node": "Q", "direction": 229, "speed": 2.74, "speed_unit": "M", "status": 0}
        air = await state("air", "humidity", 23.8)
        assert air.json()["values"]["temperature"] == 19.2

        # garbage between lines: skipped, the value still comes
        mast.sensors["gill-windsonic"].faults.garbage = True
        mast.sensors["gill-windsonic"].values["speed"] = 5.5
        since = len(w.seen)
        await state("wind", "speed", 5.5, since)
        # a wrong checksum on every line: an error on the points, never a value
        mast.sensors["gill-windsonic"].faults.bad_checksum = True
        mast.sensors["gill-windsonic"].values["speed"] = 9.9
        failed = await w.wait_for(
            lambda s: s.topic == f"{BASE}/wind/state" and s.json().get("errors"), since=since, what="wind errors"
        )
        assert set(failed.json()["errors"].values()) == {"framing"}
        assert all(s.json().get("values", {}).get("speed") != 9.9 for s in w.on(f"{BASE}/wind/state"))
        mast.sensors["gill-windsonic"].faults.bad_checksum = False
        await state("wind", "speed", 9.9, since)

        # a polled sensor that stops answering goes offline, and comes back
        mast.sensors["vaisala-hmp155"].faults.silent = True
        await w.wait_for(
            lambda s: (
                s.topic == f"{BASE}/event" and s.json().get("kind") == "device_offline" and s.json()["device"] == "air"
            ),
            since=since,
            timeout=20,
            what="air offline",
        )
        mast.sensors["vaisala-hmp155"].faults.silent = False
        mast.sensors["vaisala-hmp155"].values["temperature"] = -3.5
        await state("air", "temperature", -3.5, since)

        # lines that never end: refused as too long, not glued together into a value
        mast.sensors["maxbotix-hrxl-maxsonar-wr"].faults.no_terminator = True
        failed = await w.wait_for(
            lambda s: s.topic == f"{BASE}/level/state" and s.json().get("errors"), since=since, what="level errors"
        )
        assert set(failed.json()["errors"].values()) <= {"framing", "timeout"}
        mast.sensors["maxbotix-hrxl-maxsonar-wr"].faults.no_terminator = False
        mast.sensors["maxbotix-hrxl-maxsonar-wr"].values["range"] = 777
        await state("level", "range", 777, since)
    finally:
        await gateway.stop()
        await w.stop()
