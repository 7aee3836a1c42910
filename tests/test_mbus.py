"""Wired M-Bus: frames and records against published telegrams and an independent decoder (pyMeterBus),
hostile frames, the scan, and a segment of emulated meters read through the gateway on a real mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import meterbus
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.app import Gateway
from gateway.points.units import convert
from gateway.profiles.registry import ProfileRegistry, resolve
from gateway.south.mbus import frame
from gateway.south.mbus.driver import MbusTransport, parse_address
from gateway.south.mbus.links import MbusLink
from gateway.south.mbus.records import (
    VIF_OF,
    RecordError,
    encode_record,
    header_bytes,
    manufacturer_code,
    parse_rsp_ud,
)
from gateway.south.mbus.scan import scan_primary, scan_secondary
from hil.broker import MosquittoBroker
from hil.mbus.meter import MbusMeter
from hil.ptyline import PtyLine
from hil.serialbus import SerialBus
from tests.mqtt_harness import Watcher, plain_config, start_gateway

BASE = "cityedge/hard"

# "The M-Bus: A Documentation" rev. 4.8 (M-Bus Usergroup), the RSP_UD example with a variable data
# structure: meter 12345678 of manufacturer PAD, water; 12.565 m3, the maximum flow 0.113 m3/h in storage 5,
# and 218.37 kWh in tariff 2 of subunit 1.
DOC_EXAMPLE = bytes.fromhex("681F1F680802727856341224400107550000000313153100DA023B13018B60043718021816")
# Published captures in libmbus, test/test-frames/<name>.hex (real meters' answers).
KAMSTRUP_601 = bytes.fromhex(
    "68F7F768081172175885062D2C0804040000000C78175885060406E791000004142CDB00000422D90300000459B92700"
    "00045D081200000461B1150000042D5B010000142DC0010000043B1F020000143B740200008410060000000084200600"
    "00000084401400000000848040140000000084C0400600000000046D1A2F65114406518200004414B2C30000542D2602"
    "0000543B03040000C4100600000000C4200600000000C4401400000000C480401400000000C4C0400600000000426C5F"
    "1C0F00000000E7E40000636600000000000000000000000000005BC9A50234530000E0B20300899C6800000000000100"
    "01070709010300000000009816"
)
CYBLE_WATER = bytes.fromhex(
    "6856566808017271000012770414070A3000000C78710000120D7C084449202E747375630A454C425943205453455404"
    "6D2B0D9811027C09656D6974202E746162F21004143D30000004947F140000004414000000000F10011F2F16"
)


def _decode(raw: bytes) -> Any:
    found = frame.parse(raw)
    return parse_rsp_ud(found.ci or 0, found.data)


def test_the_documentations_example_decodes_to_its_values() -> None:
    telegram = _decode(DOC_EXAMPLE)
    assert telegram.header.secondary == "12345678.PAD.01.07" and telegram.header.access == 0x55
    volume, flow_max, energy = telegram.records
    assert (volume.quantity, volume.unit, volume.value) == ("volume", "m3", 12.565)
    assert (flow_max.function, flow_max.storage, flow_max.value) == ("maximum", 5, 0.113)
    assert (energy.unit, energy.value, energy.tariff, energy.subunit) == ("Wh", 218370, 2, 1)


def test_published_heat_and_water_meter_telegrams() -> None:
    heat = _decode(KAMSTRUP_601)
    assert heat.header.secondary == "06855817.KAM.08.04" and heat.header.medium_name == "heat (outlet)"
    by = {(r.quantity, r.function, r.storage, r.tariff, r.subunit): r for r in heat.records}
    assert by["energy", "instantaneous", 0, 0, 0].value == 37351000  # Wh (libmbus lists 37351000 Wh too)
    assert by["volume", "instantaneous", 0, 0, 0].value == 561.08
    assert by["flow_temperature", "instantaneous", 0, 0, 0].value == 101.69
    assert by["temperature_difference", "instantaneous", 0, 0, 0].value == 55.53
    assert by["power", "maximum", 1, 0, 0].value == 55000
    assert by["date_time", "instantaneous", 0, 0, 0].value == "2011-01-05T15:26"
    assert by["volume", "instantaneous", 0, 0, 2].value == 0.0  # subunit 2 (DIFE 40 40)
    assert len(heat.records) == 27 and len(heat.manufacturer_data) == 57
    water = _decode(CYBLE_WATER)
    assert water.header.secondary == "12000071.ACW.14.07"
    texts = [(r.unit, r.value) for r in water.records if r.quantity == "plain"]
    assert texts == [("cust. ID", "TEST CYBLE"), ("bat. time", 4338)]
    volumes = [(r.value, r.modifier, r.storage) for r in water.records if r.quantity == "volume"]
    assert volumes == [(123.49, "", 0), (0.2, "manufacturer", 0), (0.0, "", 1)]  # VIFE 7F: not the index


def _theirs(raw: bytes) -> list[tuple[Any, str, int, int, str]]:
    telegram = meterbus.load(raw)
    out = []
    for r in telegram.records:
        it = r.interpreted
        out.append(
            (it["value"], str(it["unit"]).split(".")[-1], it["storage_number"], it.get("tariff") or 0, it["function"])
        )
    return out


_UNITS = {"Wh": "WH", "m3": "M3", "°C": "C", "K": "K", "W": "W", "m3/h": "M3_H", "": "NONE", "kg": "KG", "bar": "BAR"}
_FUNCTION = {"instantaneous": "INSTANTANEOUS_VALUE", "maximum": "MAXIMUM_VALUE", "minimum": "MINIMUM_VALUE"}


def _comparable(raw: bytes) -> list[tuple[Any, str, int, int, str]]:
    out = []
    for r in _decode(raw).records:
        value, unit = r.value, _UNITS.get(r.unit, r.unit)
        if r.unit in ("min", "h", "d") and isinstance(value, int):  # pyMeterBus gives durations in seconds
            value, unit = convert(value, r.unit, "s"), "SECONDS"
        out.append((value, unit, r.storage, r.tariff, f"FunctionType.{_FUNCTION[r.function]}"))
    return out


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float, Decimal)):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)))
    return a == b


def test_pymeterbus_reads_the_published_telegrams_as_we_do() -> None:
    for raw in (DOC_EXAMPLE, KAMSTRUP_601):
        ours, theirs = _comparable(raw), _theirs(raw)
        if _decode(raw).manufacturer_data:  # pyMeterBus lists the manufacturer's block as one more record
            assert theirs[-1][4] == "FunctionType.SPECIAL_FUNCTION"
            theirs = theirs[:-1]
        assert len(ours) == len(theirs)
        for mine, other in zip(ours, theirs, strict=True):
            if mine[1] in ("", "NONE") or "DATE" in other[1]:
                continue  # dates and fabrication numbers: both decode, in different shapes
            assert _close(mine[0], other[0]) and mine[1:] == other[1:], (mine, other)


_NUMERIC = sorted(q for q in VIF_OF if q not in ("mass_flow", "pressure", "external_temperature"))


@st.composite
def _records(draw: st.DrawFn) -> tuple[str, int, int, int, str, int]:
    quantity = draw(st.sampled_from(_NUMERIC))
    allowed = VIF_OF[quantity][2]
    exponent = draw(st.sampled_from(list(allowed)))
    stored = draw(st.integers(-(2**31) + 1, 2**31 - 1))
    return (
        quantity,
        exponent,
        stored,
        draw(st.integers(0, 40)),
        draw(st.sampled_from(["instantaneous", "maximum", "minimum"])),
        draw(st.integers(0, 3)),
    )


def _telegram(specs: list[tuple[str, int, int, int, str, int]]) -> bytes:
    body = b"".join(
        encode_record(q, stored * 10.0**e, exponent=e, storage=s, function=f, tariff=t)
        for q, e, stored, s, f, t in specs
    )
    return frame.long(frame.RSP_UD, 1, 0x72, header_bytes("12345678", "KAM", 8, 4, 1) + body)


@given(st.lists(_records(), min_size=1, max_size=8))
@settings(max_examples=150, deadline=None)
def test_generated_records_decode_the_same_in_both_decoders(specs: list[tuple[str, int, int, int, str, int]]) -> None:
    raw = _telegram(specs)
    ours = _decode(raw).records
    theirs = meterbus.TelegramLong.parse(list(raw)).records  # load() may take it for a wireless frame
    assert len(ours) == len(theirs) == len(specs)
    for spec, mine, other in zip(specs, ours, theirs, strict=True):
        quantity, exponent, stored, storage, function, tariff = spec
        assert (mine.quantity, mine.storage, mine.function, mine.tariff) == (quantity, storage, function, tariff)
        assert _close(mine.value, stored * 10.0**exponent)
        assert _close(mine.value, other.interpreted["value"])
        assert other.interpreted["storage_number"] == storage


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_random_bytes_are_a_classified_error_never_a_crash(data: bytes) -> None:
    with contextlib.suppress(frame.FrameError, RecordError):
        found = frame.parse(data)
        if found.kind == "long":
            parse_rsp_ud(found.ci or 0, found.data)
    with contextlib.suppress(RecordError):
        parse_rsp_ud(0x72, data)


@given(st.sampled_from([DOC_EXAMPLE, KAMSTRUP_601, CYBLE_WATER]), st.data())
@settings(max_examples=300, deadline=None)
def test_one_damaged_byte_is_caught_by_the_frame(raw: bytes, data: st.DataObject) -> None:
    damaged = bytearray(raw)
    at = data.draw(st.integers(0, len(raw) - 1))
    damaged[at] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(frame.FrameError):
        found = frame.parse(bytes(damaged))
        # a start byte damaged into E5 reads as an acknowledgement (and the driver refuses what follows it as a
        # collision); what never happens is a long frame, that is, records, out of a damaged one
        assert found.kind != "long", f"a damaged frame was taken: byte {at}"


@given(st.integers(1, len(KAMSTRUP_601) - 1))
def test_a_cut_off_frame_is_truncated(length: int) -> None:
    assert frame.frame_end(bytearray(KAMSTRUP_601[:length])) is None
    with pytest.raises(frame.FrameError):
        frame.parse(KAMSTRUP_601[:length])


def test_addresses_and_manufacturer_codes() -> None:
    assert manufacturer_code(0x2C2D) == "KAM" and manufacturer_code(0x4024) == "PAD"
    assert parse_address(5)[0].primary == 5  # type: ignore[union-attr]
    secondary, _ = parse_address("06855817.KAM.08.04")
    assert secondary is not None and secondary.ident == "06855817" and secondary.medium == 4
    assert "neither a primary" in (parse_address("12AB")[1] or "")
    assert "0-250" in (parse_address(251)[1] or "")
    assert frame.select("1234FFFF")[7:11] == bytes.fromhex("FFFF3412")


# -- a segment of emulated meters ----------------------------------------------------------------------


@dataclass
class Segment:
    line: PtyLine
    bus: SerialBus
    heat: MbusMeter
    water: MbusMeter
    spare: MbusMeter  # another water meter, primary address 3


@pytest.fixture
async def segment() -> AsyncIterator[Segment]:
    registry = ProfileRegistry()
    line = PtyLine(2400, "E", 1, turnaround=0.0)
    await line.start()
    bus = SerialBus(line)
    heat = MbusMeter(
        resolve(registry.load("kamstrup-multical-601")[0]), line, primary=1, ident="06855817", per_telegram=5
    )
    heat.values.update(energy=37351.0, volume=561.08, flow_temperature=101.69, return_temperature=46.16, power=34.7)
    heat.values.update(temperature_difference=55.53, flow=543.0, hours=985, fabrication_number=6855817)
    water_profile = resolve(registry.load("itron-cyble-mbus")[0])
    water = MbusMeter(water_profile, line, ident="12000071", values={"volume": 123.49, "volume_billing": 100.0})
    spare = MbusMeter(water_profile, line, primary=3, ident="12000072", values={"volume": 7.5})
    for meter in (heat, water, spare):
        bus.attach(meter)
    await bus.start()
    try:
        yield Segment(line, bus, heat, water, spare)
    finally:
        await bus.stop()
        await line.stop()


def _link(segment: Segment, **extra: Any) -> dict[str, Any]:
    return {"id": "mbus", "type": "mbus-serial", "device": segment.line.gateway_path, "timeout": 0.15, **extra}


@pytest.mark.long
async def test_the_scan_finds_every_meter_by_primary_and_by_secondary_address(segment: Segment) -> None:
    line = MbusTransport(MbusLink.model_validate(_link(segment)))
    try:
        primary = await scan_primary(line, range(6), timeout=0.1)
        assert [(f.primary, f.header.secondary) for f in primary] == [
            (1, "06855817.KAM.08.04"),
            (3, "12000072.ACW.14.07"),
        ]
        lines: list[str] = []
        secondary = await scan_secondary(line, timeout=0.04, progress=lines.append)
        assert [f.header.secondary for f in secondary] == [
            "06855817.KAM.08.04",
            "12000071.ACW.14.07",
            "12000072.ACW.14.07",
        ]
        # the two Itron meters share seven digits: their answers collided until the last digit told them apart
        assert segment.bus.collisions > 0 and any("1200007" in entry for entry in lines)
    finally:
        await line.close()


async def test_a_segment_read_through_the_gateway_with_its_faults(
    segment: Segment, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    path = plain_config(
        tmp_path / "gw.yaml",
        mosquitto,
        links=[_link(segment)],
        devices=[
            {"id": "heat", "profile": "kamstrup-multical-601", "link": "mbus", "address": 1, "poll": 0.5},
            {
                "id": "water",
                "profile": "itron-cyble-mbus",
                "link": "mbus",
                "address": "12000071.ACW.14.07",
                "poll": 0.5,
            },
            {"id": "spare", "profile": "itron-cyble-mbus", "link": "mbus", "address": 3, "poll": 0.5},
        ],
    )
    w = Watcher(mosquitto)
    await w.start()
    gateway: Gateway = await start_gateway(path)
    try:
        heat = await w.wait_for(lambda s: s.topic == f"{BASE}/heat/state" and "values" in s.json(), what="heat")
        values = heat.json()["values"]
        assert values["energy"] == 37351.0 and values["volume"] == 561.08 and values["flow"] == 543.0
        assert values["flow_temperature"] == 101.69 and values["power"] == 34.7 and values["status"] == 0
        assert segment.heat.stats.repeats == 0 and len(segment.heat.telegrams()) >= 3  # FCB toggled through them
        water = await w.wait_for(lambda s: s.topic == f"{BASE}/water/state" and "values" in s.json(), what="water")
        assert water.json()["values"]["volume"] == 123.49 and water.json()["values"]["volume_billing"] == 100.0
        assert segment.water.stats.selections >= 1  # read by its secondary address
        live = gateway.store.get("heat")
        assert live is not None and live.health.to_json()["learned"]["meter"]["secondary"] == "06855817.KAM.08.04"

        # a damaged answer is asked again with the same FCB: the meter repeats that telegram
        segment.heat.faults.wrong_checksum = True
        since = len(w.seen)
        failed = await w.wait_for(
            lambda s: s.topic == f"{BASE}/heat/state" and s.json().get("errors"), since=since, what="heat errors"
        )
        assert set(failed.json()["errors"].values()) == {"framing"}
        assert segment.heat.stats.repeats > 0
        segment.heat.faults.wrong_checksum = False
        segment.heat.values["energy"] = 37360.0
        await w.wait_for(
            lambda s: s.topic == f"{BASE}/heat/state" and s.json().get("values", {}).get("energy") == 37360.0,
            since=since,
            what="heat recovered",
        )

        # one silent meter costs the segment its timeout per cycle, no more: the others keep their pace
        segment.spare.faults.silent = True
        await w.wait_for(
            lambda s: s.topic == f"{BASE}/event" and s.json().get("kind") == "device_offline",
            since=since,
            timeout=20,
            what="spare offline",
        )
        before = segment.heat.stats.requests, segment.water.stats.requests
        await asyncio.sleep(3.0)
        heat_reads = segment.heat.stats.requests - before[0]
        water_reads = segment.water.stats.requests - before[1]
        # every 0.5 s: about 6 reads each in 3 s (the heat meter's 3 telegrams are 3 requests per read)
        assert heat_reads >= 3 * 4 and water_reads >= 4, (heat_reads, water_reads)
        segment.spare.faults.silent = False
        await w.wait_for(
            lambda s: (
                s.topic == f"{BASE}/event" and s.json().get("kind") == "device_online" and s.json()["device"] == "spare"
            ),
            since=since,
            timeout=20,
            what="spare online",
        )
    finally:
        await gateway.stop()
        await w.stop()


async def test_two_meters_at_one_primary_address_collide_and_are_reported_as_damaged(segment: Segment) -> None:
    segment.spare.primary = 1  # installed with the heat meter's address
    line = MbusTransport(MbusLink.model_validate(_link(segment)))
    try:
        with pytest.raises(frame.FrameError):
            await line.exchange(frame.req_ud2(1, True), 0.15, "RSP_UD")
        assert segment.bus.collisions >= 1
    finally:
        await line.close()
