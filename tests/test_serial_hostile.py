"""Hostile settings of the serial meter protocols: link keys, device addresses, profile keys and line patterns,
each refused at its line in plain words by `cityedge check` (in a bounded child), never a traceback or a hang.
And hostile bytes from the line: a meter or a sensor that sends the wrong thing gets a classified error."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.config.model import DeviceConfig
from gateway.core.device import Device
from gateway.profiles.registry import ProfileRegistry, resolve
from gateway.south.driver import CorruptAnswer, Timeout, TransactionError
from gateway.south.iec62056.driver import DRIVER as IEC
from gateway.south.iec62056.driver import IecTransport
from gateway.south.iec62056.links import Iec62056Link
from hil.iec62056.meter import ModeCMeter
from hil.ptyline import PtyLine
from hil.serialbus import SerialBus
from tests.test_config_hostile import HEADER, _bounded_check

SERIAL = {
    "iec": "  - {id: l, type: iec62056-serial, device: /dev/ttyUSB0",
    "mbus": "  - {id: l, type: mbus-serial, device: /dev/ttyUSB0",
    "ascii": "  - {id: l, type: ascii-serial, device: /dev/ttyUSB0",
    "ascii-bare": "  - {id: l, type: ascii-serial",
}
PROFILE = {"iec": "iskraemeco-mt174", "mbus": "kamstrup-multical-601", "ascii": "gill-windsonic"}

LINKS = [
    (
        "iec",
        ", max_baudrate: 12345}",
        "links[0].max_baudrate: must be 300, 600, 1200, 2400, 4800, 9600 or 19200, got 12345",
    ),
    ("iec", ", retries: 99}", "links[0].retries: must be less than or equal to 3, got 99"),
    ("iec", ", recovery: forever}", "links[0].recovery: bad duration 'forever'"),
    ("iec", ", timeout: .nan}", "links[0].timeout: bad duration nan: must be a finite number of seconds"),
    ("mbus", ", baudrate: 0}", "links[0].baudrate: must be 300, 600, 1200, 2400, 4800, 9600, 19200 or 38400, got 0"),
    ("mbus", ", bytesize: 9}", "links[0].bytesize: must be 7 or 8, got 9"),
    ("ascii", ", parity: X}", "links[0].parity: must be 'N', 'E' or 'O', got 'X'"),
    ("ascii-bare", ", device: [[[[1]]]]}", "links[0].device: must be a valid string, got a list"),
]


@pytest.mark.parametrize(("kind", "tail", "says"), LINKS, ids=[f"{k}{t}" for k, t, _ in LINKS])
def test_hostile_link_settings(kind: str, tail: str, says: str, tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(HEADER + "links:\n" + SERIAL[kind] + tail + "\n")
    code, out = _bounded_check(path)
    assert code == 2 and f"{path}:3:" in out and says in out and "Traceback" not in out, out


ADDRESSES = [
    ("iec", '"../../etc/passwd"', "is not a meter address (up to 32 digits, letters or spaces)"),
    ("iec", '"' + "9" * 40 + '"', "is not a meter address"),
    ("mbus", '"12345678.kam.01.07"', "neither a primary address (0-250) nor a secondary one"),
    ("mbus", "251", "primary address 251 is not 0-250"),
    ("mbus", "-1", "devices[0].address: must be between 0 and 4294967295, got -1"),
]


@pytest.mark.parametrize(("kind", "address", "says"), ADDRESSES, ids=[a for _, a, _ in ADDRESSES])
def test_hostile_device_addresses(kind: str, address: str, says: str, tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        HEADER + "links:\n" + SERIAL[kind] + "}\n"
        f"devices:\n  - {{id: m, profile: {PROFILE[kind]}, link: l, address: {address}}}\n"
    )
    code, out = _bounded_check(path)
    assert code == 2 and f"{path}:5:" in out and says in out and "Traceback" not in out, out


def _profile(protocol: str, body: str) -> str:
    return f"name: p\nmanufacturer: T\nmodel: T\ndescription: d\nsource: s\nprotocol: {protocol}\n{body}"


PROFILES = [
    ("iec62056", "points:\n  e: {obis: '1.8.0(bad)'}\n", "points.e.obis: '1.8.0(bad)' is not a data set address"),
    ("iec62056", "points:\n  e: {obis: 1.8.0, access: rw, min: 0, max: 1}\n", "points.e.access: an IEC 62056-21"),
    ("iec62056", "points:\n  e: {unit: kWh}\n", "points.e: missing required key 'obis'"),
    ("iec62056", "identification: ISK5\npoints: {}\n", "identification: invalid value 'ISK5': must match"),
    ("mbus", "points:\n  e: {quantity: enrgy}\n", "points.e.quantity: must be 'energy', 'volume'"),
    ("mbus", "points:\n  e: {quantity: energy, header: status}\n", "points.e: give either 'quantity'"),
    (
        "mbus",
        "points:\n  e: {quantity: energy, storage: 99999999999}\n",
        "points.e.storage: must be less than or equal to 1048576, got 99999999999",
    ),
    ("ascii", "line: {pattern: '(a+)+$'}\npoints: {}\n", "line.pattern: a repeated group that itself repeats"),
    ("ascii", "line: {pattern: '((?P<x>[0-9]*)*)'}\npoints: {}\n", "line.pattern: a repeated group"),
    ("ascii", "line: {pattern: '(?P<x>'}\npoints: {}\n", "line.pattern: not a regular expression"),
    ("ascii", "line: {pattern: 'x', delimiter: ','}\npoints: {}\n", "line: give either pattern"),
    (
        "ascii",
        "line: {delimiter: ',', max_length: 10000000}\npoints: {}\n",
        "line.max_length: must be less than or equal to 4096, got 10000000",
    ),
    ("ascii", "line: {delimiter: ','}\npoints:\n  v: {unit: V}\n", "points.v: missing required key 'field'"),
    (
        "ascii",
        "line: {delimiter: ','}\npoints:\n  v: {field: 256}\n",
        "points.v.field: must be less than or equal to 255, got 256",
    ),
]


@pytest.mark.parametrize(("protocol", "body", "says"), PROFILES, ids=[b[:40] for _, b, _ in PROFILES])
def test_hostile_profile_keys(protocol: str, body: str, says: str, tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "p.yaml").write_text(_profile(protocol, body))
    link = {"iec62056": "iec", "mbus": "mbus", "ascii": "ascii"}[protocol]
    path = tmp_path / "site.yaml"
    path.write_text(
        HEADER + f"profile_dirs: [{tmp_path / 'profiles'}]\n" + "links:\n" + SERIAL[link] + "}\n"
        "devices:\n  - {id: m, profile: p, link: l, address: 1}\n"
    )
    code, out = _bounded_check(path)
    assert code == 2 and says in out and "Traceback" not in out, out
    assert str(tmp_path / "profiles" / "p.yaml") + ":" in out  # at the profile's own line


# -- hostile bytes from a meter -----------------------------------------------------------------------


async def _session(fault: dict[str, object]) -> tuple[TransactionError, ModeCMeter]:
    profile = resolve(ProfileRegistry().load("lem-em4t-ii")[0])
    line = PtyLine(300, "E", 1, bytesize=7, turnaround=0.0, follow_speed=True)
    await line.start()
    bus = SerialBus(line)
    meter = ModeCMeter(profile, line, address="1")
    meter.faults.update(fault)
    bus.attach(meter)
    await bus.start()
    link = Iec62056Link(id="x", type="iec62056-serial", device=line.gateway_path, timeout=0.3, recovery=0.01)
    transport = IecTransport(link)
    config = DeviceConfig(id="m", profile=profile.name, link="x", address="1")
    device = Device(config, profile, link.timeout, IEC, "1")
    try:
        with pytest.raises(TransactionError) as caught:
            await IEC.transact(transport, device, IEC.plan(device, profile.points)[0])
    finally:
        await transport.close()
        await bus.stop()
        await line.stop()
    return caught.value, meter


@pytest.mark.parametrize(
    ("fault", "kind", "words"),
    [
        ({"partial": 60}, CorruptAnswer, "data readout stopped after"),
        ({"wrong_bcc": True}, CorruptAnswer, "block check character"),
        ({"slow": 0.5}, Timeout, "no identification within"),
        ({"silent": True}, Timeout, "no identification within"),
    ],
    ids=["cut-off", "bcc", "too-slow", "silent"],
)
async def test_a_meter_that_sends_the_wrong_thing_is_a_classified_failure(
    fault: dict[str, object], kind: type[Exception], words: str
) -> None:
    error, meter = await asyncio.wait_for(_session(fault), 20)
    assert isinstance(error, kind) and words in str(error)
    if kind is CorruptAnswer:
        assert meter.stats.breaks >= 1 and meter.stats.readouts >= 2  # broken off with a break, read again
    if fault.get("wrong_bcc"):
        assert meter.stats.readouts == 2 and meter.stats.bauds == [9600, 9600]  # readable: no fall back to 300


# -- hostile values inside good frames --------------------------------------------------------------


def _point(**fields: object) -> object:
    from gateway.common.yamlsource import parse_yaml
    from gateway.profiles.expand import expand
    from gateway.profiles.model import parse_profile

    body = ", ".join(f"{k}: {v}" for k, v in fields.items())
    text = _profile("mbus", f"points:\n  v: {{quantity: energy, {body}}}\n")
    resolved, issues = expand(parse_profile(parse_yaml(text, "test")))
    assert not issues
    return resolved.points[0]


@pytest.mark.parametrize(
    ("raw", "unit", "fields", "reason"),
    [
        (float("nan"), "Wh", {"unit": "kWh"}, "not_a_number"),
        (float("inf"), "Wh", {"unit": "kWh"}, "infinite"),
        ("1e400", None, {}, "infinite"),
        ("nan", None, {}, "decode: 'nan' is not a number"),
        ("12" * 30, None, {}, "decode: '" + "12" * 20 + "' is not a number"),
        (2**63, None, {"type": "uint16"}, "does not fit uint16"),
        (1.5, None, {"type": "int32"}, "is not a whole number"),
        (5, "V", {"unit": "kWh"}, "unit: the device sends V, the profile expects kWh"),
        ("\x00\x1b[2J", None, {"type": "string"}, "is not printable text"),
    ],
    ids=["nan", "inf", "1e400", "nan-text", "long-text", "huge-int", "fraction", "wrong-unit", "control-chars"],
)
def test_hostile_values_become_point_errors_never_values(
    raw: object, unit: str | None, fields: dict[str, object], reason: str
) -> None:
    from gateway.points.types import PointValueError
    from gateway.south.values import typed

    point = _point(**fields)
    with pytest.raises(PointValueError) as caught:
        typed(point, raw, unit)  # type: ignore[arg-type]
    assert reason in caught.value.reason


def test_a_meter_record_holding_nan_is_an_error_on_its_point_only() -> None:
    import struct

    from gateway.south.mbus.driver import DRIVER as MBUS
    from gateway.south.mbus.driver import Reading
    from gateway.south.mbus.records import encode_record, header_bytes, parse_rsp_ud

    body = b"\x05\x06" + struct.pack("<f", float("nan")) + encode_record("volume", 1.5, exponent=-3)
    telegram = parse_rsp_ud(0x72, header_bytes("12345678", "KAM", 8, 4, 1) + body)
    profile = resolve(ProfileRegistry().load("kamstrup-multical-601")[0])
    config = DeviceConfig(id="m", profile=profile.name, link="x", address=1)
    device = Device(config, profile, 0.5, MBUS, MBUS.address(config)[0])
    request = MBUS.plan(device, profile.points)[0]
    MBUS.decode(device, request, Reading(telegram.header, telegram.records, 1))
    assert device.errors["energy"] == "not_a_number" and "energy" not in device.values
    assert device.values["volume"] == 1.5
