"""IEC 62056-21 mode C: the telegram codec against a manufacturer's published readout and an independent parser,
hostile telegrams, and meters on an emulated line read through the whole gateway on a real mosquitto."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iec62056_21 import messages as independent

from gateway.app import Gateway
from gateway.profiles.registry import ProfileRegistry, resolve
from gateway.south.iec62056.telegram import (
    BREAK,
    TelegramError,
    ack_option,
    build_readout,
    parse_identification,
    parse_readout,
    sign_on,
)
from hil.broker import MosquittoBroker
from hil.iec62056.meter import ModeCMeter
from hil.ptyline import PtyLine
from hil.serialbus import SerialBus
from tests.mqtt_harness import Watcher, plain_config, start_gateway

BASE = "cityedge/hard"

# LEM EM4T II manual V1.0 (5 November 2020), section 4.2.9 "Examples of read-outs", read-out table 1:
# what the meter answers to /?! and ACK 0 5 0, with its block check character '+', and the break 'SOH B0 ETX q'.
LEM_IDENTIFICATION = b"/EMH5\\@D4EM4TIIW001--\r\n"
LEM_LINES = [
    "1-0:1.8.0*255(000000000.0*kWh)",
    "1-0:2.8.0*255(000000000.0*kWh)",
    "1-0:3.8.0*255(000000000.0*kvarh)",
    "1-0:4.8.0*255(000000000.0*kvarh)",
    "0-0:F.F.0*255(00000000)",
    "1-0:0.0.1*255()",
    "1-0:0.2.0*255(10600000)",
    "1-0:0.9.1*255(140253)",
    "1-0:0.9.2*255(121221)",
    "0-0:C.1.0*255(03878504)",
    "0-0:C.72.1*255()",
    "0-0:C.72.2*255()",
    "1-0:0.8.4*255(5*min)",
    "1-0:0.3.0*255(6.00*Imp/kWh)",
    "1-0:0.2.1*1(121120??)",
    "1-0:0.2.1*50(121120??)",
    "0-0:C.90.2*255(9F139CC2)",
    "1-0:C.1.9*255(Point-ID)",
]
LEM_READOUT = b"\x02" + b"".join(line.encode() + b"\r\n" for line in LEM_LINES) + b"!\r\n\x03+"


def test_the_manuals_readout_checks_and_decodes_to_its_data_sets() -> None:
    assert build_readout(LEM_LINES) == LEM_READOUT  # our BCC is the manual's '+'
    assert BREAK == b"\x01B0\x03q" and ack_option(9600) == b"\x06050\r\n" and sign_on() == b"/?!\r\n"
    readout = parse_readout(LEM_READOUT)
    assert [(i.value, i.unit) for i in readout.sets["1-0:3.8.0*255"]] == [("000000000.0", "kvarh")]
    assert readout.find("C.1.0")[0].value == "03878504"  # type: ignore[index]
    assert readout.find("0.8.4")[0].unit == "min"  # type: ignore[index]
    assert readout.find("1-0:0.2.1*50")[0].value == "121120??"  # type: ignore[index]
    assert readout.find("0.0.1")[0].value == "" and len(readout.sets) == 18  # type: ignore[index]
    ident = parse_identification(LEM_IDENTIFICATION)
    assert (ident.manufacturer, ident.baud, ident.ident, ident.fast) == ("EMH", 9600, "D4EM4TIIW001--", False)
    assert parse_identification(b"/ISk5MT174-0001\r\n").fast  # lowercase third letter: 20 ms


def _theirs(frame: bytes) -> list[tuple[str | None, str, str | None]]:
    message = independent.ReadoutDataMessage.from_bytes(frame)
    return [(s.address, s.value, s.unit) for line in message.data_block.data_lines for s in line.data_sets]


def _ours(frame: bytes) -> list[tuple[str | None, str, str | None]]:
    return [(a, i.value, i.unit) for a, items in parse_readout(frame).sets.items() for i in items]


def test_an_independent_parser_reads_the_manuals_readout_as_we_do() -> None:
    assert _theirs(LEM_READOUT) == _ours(LEM_READOUT)
    theirs = independent.IdentificationMessage.from_bytes(b"/ISk5MT174-0001\r\n")
    ours = parse_identification(b"/ISk5MT174-0001\r\n")
    assert (theirs.manufacturer, theirs.switchover_baudrate_char) == (ours.manufacturer, "5")


_address = st.from_regex(r"\A[0-9]-[0-9]:[0-9A-F]{1,2}\.[0-9]{1,2}\.[0-9]\*255\Z")
_value = st.from_regex(r"\A[0-9]{1,9}(\.[0-9]{1,3})?\Z")
_unit = st.sampled_from(["kWh", "kvarh", "V", "A", "kW", "min"])
_sets = st.lists(st.tuples(_address, _value, _unit), min_size=1, max_size=12, unique_by=lambda t: t[0])


@given(_sets)
@settings(max_examples=150, deadline=None)
def test_generated_readouts_read_the_same_in_both_parsers(sets: list[tuple[str, str, str]]) -> None:
    frame = build_readout([f"{a}({v}*{u})" for a, v, u in sets])
    assert _ours(frame) == _theirs(frame) == [(a, v, u) for a, v, u in sets]


@given(_sets, st.data())
@settings(max_examples=200, deadline=None)
def test_one_damaged_byte_is_always_caught(sets: list[tuple[str, str, str]], data: st.DataObject) -> None:
    frame = bytearray(build_readout([f"{a}({v}*{u})" for a, v, u in sets]))
    at = data.draw(st.integers(0, len(frame) - 1))
    frame[at] ^= data.draw(st.integers(1, 0x7F))
    with contextlib.suppress(TelegramError):
        readout = parse_readout(bytes(frame))
        # only a change before STX (noise) or of STX itself into noise may still leave a good telegram
        assert at == 0 and readout.sets == parse_readout(build_readout([f"{a}({v}*{u})" for a, v, u in sets])).sets
        pytest.fail("a damaged readout was taken")  # STX changed: there is no STX left to start from


@given(st.binary(max_size=400))
@settings(max_examples=300, deadline=None)
def test_random_bytes_are_a_classified_error_never_a_crash(data: bytes) -> None:
    for parse in (parse_readout, parse_identification):
        with contextlib.suppress(TelegramError):
            parse(data)
    with contextlib.suppress(TelegramError):
        parse_readout(b"\x02" + data)


@given(st.integers(1, len(LEM_READOUT) - 1))
def test_a_cut_off_readout_is_truncated_not_read(length: int) -> None:
    with pytest.raises(TelegramError) as caught:
        parse_readout(LEM_READOUT[:length])
    assert caught.value.reason in ("truncated", "framing")


# -- meters on an emulated line, through the gateway ------------------------------------------------


@dataclass
class Cabinet:
    line: PtyLine
    bus: SerialBus
    lem: ModeCMeter
    iskra: ModeCMeter


@pytest.fixture
async def cabinet() -> AsyncIterator[Cabinet]:
    """Two meters on one RS-485 pair (multi-drop, told apart by address), the gateway's port following their speed."""
    registry = ProfileRegistry()
    line = PtyLine(300, "E", 1, bytesize=7, turnaround=0.0, follow_speed=True)
    await line.start()
    bus = SerialBus(line)
    lem = ModeCMeter(resolve(registry.load("lem-em4t-ii")[0]), line, address="03878504")
    lem.values.update(energy_import=1234.5, energy_export=12.3, serial_number="03878504", error_code="00000000")
    iskra = ModeCMeter(resolve(registry.load("iskraemeco-mt174")[0]), line, address="71234567")
    iskra.values.update(energy_import=4711.125, energy_import_t1=4000.0, energy_import_t2=711.125, error_code="00")
    iskra.units["energy_import"] = "Wh"  # this one states its total in Wh: the gateway converts
    iskra.values["energy_import"] = 4711.125
    bus.attach(lem)
    bus.attach(iskra)
    await bus.start()
    try:
        yield Cabinet(line, bus, lem, iskra)
    finally:
        await bus.stop()
        await line.stop()


def _health(gateway: Gateway, device: str) -> dict[str, Any]:
    live = gateway.store.get(device)
    assert live is not None
    return live.health.to_json()


def _config(tmp_path: Path, broker: MosquittoBroker, cabinet: Cabinet, **link: Any) -> Path:
    return plain_config(
        tmp_path / "gw.yaml",
        broker,
        links=[
            {
                "id": "meters",
                "type": "iec62056-serial",
                "device": cabinet.line.gateway_path,
                "timeout": 0.4,
                "recovery": 0.05,
                **link,
            }
        ],
        devices=[
            {
                "id": "lem",
                "profile": "lem-em4t-ii",
                "link": "meters",
                "address": "03878504",
                "poll": 0.5,
                "offline_after": 2,
            },
            {
                "id": "iskra",
                "profile": "iskraemeco-mt174",
                "link": "meters",
                "address": "71234567",
                "poll": 0.5,
                "offline_after": 2,
            },
        ],
    )


@pytest.mark.long
async def test_two_meters_on_one_line_are_read_at_their_speed_through_the_gateway(
    cabinet: Cabinet, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    w = Watcher(mosquitto)
    await w.start()
    gateway: Gateway = await start_gateway(_config(tmp_path, mosquitto, cabinet))
    try:
        lem = await w.wait_for(lambda s: s.topic == f"{BASE}/lem/state" and "values" in s.json(), what="lem state")
        assert lem.json()["values"].get("energy_import") == 1234.5, (lem.json(), cabinet.lem.stats, cabinet.iskra.stats)
        assert lem.json()["values"]["serial_number"] == "03878504"
        assert lem.json()["values"]["load_profile_period"] == 0
        iskra = await w.wait_for(lambda s: s.topic == f"{BASE}/iskra/state", what="iskra state")
        assert b"(4711125.000*Wh)" in cabinet.iskra.telegram()  # it states Wh; the profile wants kWh
        assert iskra.json()["values"]["energy_import"] == 4711.125
        assert iskra.json()["values"]["energy_import_t2"] == 711.125
        # each at the speed it offered (both 9600), each after its own reaction time
        assert set(cabinet.lem.stats.bauds or []) == {9600} and 9600 in (cabinet.iskra.stats.bauds or [])
        assert cabinet.lem.stats.early_acks == 0 and cabinet.iskra.stats.early_acks == 0
        health = _health(gateway, "lem")
        assert health["learned"]["readout"]["baud"] == 9600
        assert health["learned"]["readout"]["chars"] == len(cabinet.lem.telegram())

        # a damaged readout: the session is broken off and read again within the same poll
        cabinet.lem.faults.wrong_bcc = True
        since = len(w.seen)
        failed = await w.wait_for(
            lambda s: s.topic == f"{BASE}/lem/state" and s.json().get("errors"), since=since, what="lem errors"
        )
        assert set(failed.json()["errors"].values()) == {"framing"}
        assert cabinet.lem.stats.breaks >= 1
        cabinet.lem.faults.wrong_bcc = False
        cabinet.lem.values["energy_import"] = 1240.0
        await w.wait_for(
            lambda s: s.topic == f"{BASE}/lem/state" and s.json().get("values", {}).get("energy_import") == 1240.0,
            since=since,
            what="lem recovered",
        )

        # silent meter: offline by the same health machine as Modbus; the other one is still read
        cabinet.iskra.faults.silent = True
        since = len(w.seen)
        offline = await w.wait_for(
            lambda s: s.topic == f"{BASE}/event" and s.json().get("kind") == "device_offline",
            since=since,
            timeout=20,
            what="iskra offline",
        )
        assert offline.json()["device"] == "iskra"
        cabinet.lem.values["energy_import"] = 1250.0
        await w.wait_for(
            lambda s: s.topic == f"{BASE}/lem/state" and s.json().get("values", {}).get("energy_import") == 1250.0,
            since=since,
            what="lem read while iskra is silent",
        )
        cabinet.iskra.faults.silent = False
        await w.wait_for(
            lambda s: (
                s.topic == f"{BASE}/event" and s.json().get("kind") == "device_online" and s.json()["device"] == "iskra"
            ),
            since=since,
            timeout=20,
            what="iskra back online",
        )
    finally:
        await gateway.stop()
        await w.stop()


async def test_a_meter_that_will_not_switch_speed_is_read_at_300_and_the_gateway_learns_it(
    cabinet: Cabinet, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    cabinet.iskra.faults.refuse_baud = True
    cabinet.lem.faults.silent = True
    w = Watcher(mosquitto)
    await w.start()
    gateway = await start_gateway(_config(tmp_path, mosquitto, cabinet, max_baudrate=4800))
    try:
        iskra = await w.wait_for(lambda s: s.topic == f"{BASE}/iskra/state" and "values" in s.json(), what="iskra")
        assert iskra.json()["values"]["energy_import_t1"] == 4000.0  # read at 300 in the same poll
        assert "baud_switch" not in _health(gateway, "iskra").get("learned", {})  # once is not yet a lesson
        await w.wait_for(
            lambda s: "baud_switch" in _health(gateway, "iskra").get("learned", {}),
            what="the lesson, after two polls",
        )
        health = _health(gateway, "iskra")
        assert health["learned"]["baud_switch"]["value"] is False
        assert health["learned"]["baud_switch"]["profile"] == "iskraemeco-mt174"
        assert health["learned"]["readout"]["baud"] == 300
        assert cabinet.line.mismatched > 0  # the first try at 4800 really arrived as garbage
        first = cabinet.iskra.stats.readouts
        await w.wait_for(lambda s: cabinet.iskra.stats.readouts >= first + 2, what="more polls")
        # learned: later polls propose 300 at once
        assert cabinet.iskra.stats.bauds is not None and cabinet.iskra.stats.bauds[-1] == 300
    finally:
        await gateway.stop()
        await w.stop()
