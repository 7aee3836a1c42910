"""Broken configurations and profiles: each gives the exact message, at the exact place, and exit status 2.

Every case names the text where the problem sits (`at`); the test finds that text in
the file and expects the message at its line and column, so positions are checked
against the file itself rather than against numbers copied from a previous run.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.cli import main
from tests.config_files import write_site

HEADER = "gateway: {id: cab-1}\n"
LINKS = """\
links:
  - {id: bus, type: modbus-rtu, device: /dev/ttyUSB0}
  - {id: net, type: modbus-tcp, host: 127.0.0.1}
"""


@dataclass
class Case:
    id: str
    config: str
    at: str  # text at the reported position (first occurrence, or `nth`)
    key: str
    message: str
    profiles: dict[str, str] = field(default_factory=dict)
    nth: int = 1
    file: str = "config"  # or a profile name: the file the problem is reported in


def _profile(name: str, body: str, protocol: str = "") -> str:
    head = f"name: {name}\nmanufacturer: Test\nmodel: T1\ndescription: test device\nsource: test sheet\n{protocol}"
    return head + textwrap.dedent(body)


def _device(profile: str, extra: str = "") -> str:
    return (
        HEADER
        + LINKS
        + f"profile_dirs: [profiles]\ndevices:\n  - {{id: d1, profile: {profile}, link: bus, unit: 1{extra}}}\n"
    )


CASES = [
    Case(
        "unknown-profile",
        HEADER + LINKS + "devices:\n  - {id: m, profile: sdm630, link: bus, unit: 1}\n",
        "sdm630",
        "devices[0].profile",
        "unknown profile 'sdm630' (did you mean 'eastron-sdm630'?)",
    ),
    Case(
        "unknown-key",
        HEADER + LINKS + "devices:\n  - {id: m, profile: eastron-sdm630, link: bus, unit: 1, pol: 2s}\n",
        "pol:",
        "devices[0].pol",
        "unknown key 'pol' (did you mean 'poll'?)",
    ),
    Case(
        "wrong-type",
        HEADER + LINKS + "devices:\n  - {id: m, profile: eastron-sdm630, link: bus, unit: one}\n",
        "one}",
        "devices[0].unit",
        "must be a valid integer, unable to parse string as an integer, got 'one'",
    ),
    Case(
        "unit-range",
        HEADER + LINKS + "devices:\n  - {id: m, profile: eastron-sdm630, link: bus, unit: 300}\n",
        "300",
        "devices[0].unit",
        "must be less than or equal to 255, got 300",
    ),
    Case(
        "missing-link",
        HEADER + LINKS + "devices:\n  - {id: m, profile: eastron-sdm630, link: bsu, unit: 1}\n",
        "bsu",
        "devices[0].link",
        "unknown link 'bsu' (did you mean 'bus'?)",
    ),
    Case(
        "duplicate-device",
        HEADER + LINKS + "devices:\n  - {id: m, profile: eastron-sdm630, link: bus, unit: 1}\n"
        "  - {id: m, profile: eastron-sdm630, link: bus, unit: 2}\n",
        "m,",
        "devices[1].id",
        "duplicate id 'm' (first used at devices[0])",
        nth=2,
    ),
    Case(
        "duplicate-unit",
        HEADER + LINKS + "devices:\n  - {id: a, profile: eastron-sdm630, link: bus, unit: 7}\n"
        "  - {id: b, profile: eastron-sdm120, link: bus, unit: 7}\n",
        "7}",
        "devices[1].unit",
        "unit 7 on link 'bus' is already used by 'a'",
        nth=2,
    ),
    Case(
        "node-device-id-clash",
        HEADER + LINKS + "devices:\n  - {id: pole, profile: eastron-sdm630, link: bus, unit: 1}\n"
        "nodes:\n  - {id: pole}\n",
        "pole}",
        "nodes[0].id",
        "duplicate id 'pole' (first used at devices[0])",
    ),
    Case(
        "duplicate-link",
        HEADER + "links:\n  - {id: bus, type: modbus-tcp, host: a}\n  - {id: bus, type: modbus-tcp, host: b}\n",
        "bus,",
        "links[1].id",
        "duplicate id 'bus' (first used at links[0])",
        nth=2,
    ),
    Case(
        "bad-duration",
        HEADER + LINKS + "devices:\n  - {id: m, profile: eastron-sdm630, link: bus, unit: 1, poll: 5 sec}\n",
        "5 sec",
        "devices[0].poll",
        "bad duration '5 sec': use a number of seconds or a string like 500ms, 1s, 5m",
    ),
    Case(
        "zero-poll",
        HEADER + LINKS + "devices:\n  - {id: m, profile: eastron-sdm630, link: bus, unit: 1, poll: 0ms}\n",
        "0ms",
        "devices[0].poll",
        "must be between 10ms and 1d, got 0s",
    ),
    Case(
        "override-min-max",
        _device("water-level-logger", ", overrides: {slave_address: {min: 300, max: 1}}"),
        "300",
        "devices[0].overrides.slave_address.min",
        "min 300 is greater than max 1",
    ),
    Case(
        "override-unknown-point",
        _device("eastron-sdm630", ", overrides: {voltage_l4: {unit: V}}"),
        "voltage_l4",
        "devices[0].overrides.voltage_l4",
        "profile 'eastron-sdm630' has no point 'voltage_l4'",
    ),
    Case(
        "override-read-only",
        _device("eastron-sdm630", ", overrides: {voltage_l1: {access: rw, min: 0, max: 1}}"),
        "rw,",
        "devices[0].overrides.voltage_l1.access",
        "input registers are read-only; access must be r",
    ),
    Case(
        "point-subset",
        _device("eastron-sdm630", ", points: [voltage_l1, frequncy]"),
        "frequncy",
        "devices[0].points[1]",
        "profile 'eastron-sdm630' has no point 'frequncy' (did you mean 'frequency'?)",
    ),
    Case(
        "unknown-param",
        _device("dali-modbus-gateway", ", params: {lines: 2}"),
        "lines",
        "devices[0].params.lines",
        "profile 'dali-modbus-gateway' has no parameter 'lines' (has: line, ballasts, groups)",
    ),
    Case(
        "param-range",
        _device("dali-modbus-gateway", ", params: {line: 4}"),
        "4}",
        "devices[0].params.line",
        "4 is outside 0..3",
    ),
    Case(
        "yaml-syntax",
        HEADER + "links:\n  - {id: bus, type: modbus-tcp, host: a\n",
        "\n",
        "",
        "YAML syntax error: expected ',' or '}', but got '<stream end>'",
        nth=3,
    ),
    Case(
        "yaml-duplicate-key", HEADER + "mqtt:\n  host: a\n  host: b\n", "host: b", "mqtt.host", "duplicate key 'host'"
    ),
    Case(
        "empty-file",
        "# nothing yet\n",
        "#",
        "",
        "expected a mapping of settings at the top level, but the file is empty",
    ),
    Case("missing-gateway", "mqtt: {host: a}\n", "mqtt", "gateway", "missing required key 'gateway'"),
    Case(
        "bad-gateway-id",
        "gateway: {id: cab/1}\n",
        "cab/1",
        "gateway.id",
        "invalid value 'cab/1': use letters, digits, '-', '_' and '.' (at most 64, no spaces or '/')",
    ),
    Case(
        "inline-password",
        HEADER + "mqtt: {username: gw, password: hunter2}\n",
        "hunter2",
        "mqtt.password",
        "do not write the password into the configuration: use password_env or password_file",
    ),
    Case(
        "tls-half",
        HEADER + "mqtt:\n  tls: {cert: c.pem}\n",
        "{cert",
        "mqtt.tls",
        "client certificate and key go together: set both cert and key, or neither",
    ),
    Case(
        "failover",
        HEADER + "mqtt: {failover: [broker2]}\n",
        "[broker2]",
        "mqtt.failover",
        "failover broker 'broker2' must be host:port",
    ),
    Case(
        "link-type",
        HEADER + "links:\n  - {id: x, type: modbus-ascii, host: a}\n",
        "modbus-ascii",
        "links[0].type",
        "unknown type 'modbus-ascii'; expected one of 'ascii-serial', 'iec62056-serial', 'mbus-serial', "
        "'modbus-rtu', 'modbus-rtu-tcp', 'modbus-tcp'",
    ),
    Case(
        "link-missing-device",
        HEADER + "links:\n  - {id: x, type: modbus-rtu}\n",
        "{id",
        "links[0].device",
        "missing required key 'device'",
        nth=2,
    ),
    Case(
        "baudrate",
        HEADER + "links:\n  - {id: x, type: modbus-rtu, device: /dev/ttyS0, baudrate: 9601}\n",
        "9601",
        "links[0].baudrate",
        "must be 1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600 or 115200, got 9601",
    ),
    Case(
        "parity",
        HEADER + "links:\n  - {id: x, type: modbus-rtu, device: /dev/ttyS0, parity: even}\n",
        "even",
        "links[0].parity",
        "must be 'N', 'E' or 'O', got 'even'",
    ),
    Case(
        "reserved-id",
        HEADER + LINKS + "devices:\n  - {id: health, profile: eastron-sdm630, link: bus, unit: 1}\n",
        "health",
        "devices[0].id",
        "'health' is reserved for the gateway's own topics; choose another id",
    ),
    Case(
        "node-as-device",
        HEADER + LINKS + "devices:\n  - {id: p, profile: esp32-pole-sensor, link: bus, unit: 1}\n",
        "esp32-pole-sensor",
        "devices[0].profile",
        "profile 'esp32-pole-sensor' describes a node device; list it under nodes",
    ),
    Case(
        "device-as-node",
        HEADER + "nodes:\n  - {id: p, profile: eastron-sdm120}\n",
        "eastron-sdm120",
        "nodes[0].profile",
        "profile 'eastron-sdm120' describes a modbus device; list it under devices",
    ),
    # -- profiles, reported in the profile file --------------------------------------------------
    Case(
        "profile-name-mismatch",
        _device("meter"),
        "metre",
        "name",
        "name 'metre' must match the file name 'meter'",
        {"meter": _profile("metre", "points: {v: {table: input, address: 0}}\n")},
        file="meter",
    ),
    Case(
        "writable-without-limits",
        _device("relay"),
        "rw}",
        "points.setpoint.access",
        "writable point needs min and max (access is rw)",
        {"relay": _profile("relay", "points:\n  setpoint: {table: holding, address: 3, access: rw}\n")},
        file="relay",
    ),
    Case(
        "write-wider-than-the-device-takes",
        _device("meter"),
        "serial:",
        "points.serial",
        "'serial' takes 8 registers; this device writes at most 4 at once (limits.max_write_registers)",
        {
            "meter": _profile(
                "meter",
                "limits: {max_write_registers: 4}\n"
                "points:\n  serial: {table: holding, address: 0, type: string, length: 16, access: rw}\n",
            )
        },
        file="meter",
    ),
    Case(
        "overlap",
        _device("meter"),
        "b:",
        "points.b",
        "'b' (input 1..2) overlaps 'a'",
        {
            "meter": _profile(
                "meter", "defaults: {table: input, type: float32}\npoints:\n  a: {address: 0}\n  b: {address: 1}\n"
            )
        },
        file="meter",
    ),
    Case(
        "string-length",
        _device("meter"),
        "serial:",
        "points.serial.length",
        "string points need a length (bytes)",
        {"meter": _profile("meter", "points:\n  serial: {table: holding, address: 0, type: string}\n")},
        file="meter",
    ),
    Case(
        "coil-type",
        _device("io"),
        "float32",
        "points.relay.type",
        "coil points are single bits: type must be bool, not float32",
        {"io": _profile("io", "points:\n  relay: {table: coil, address: 0, type: float32}\n")},
        file="io",
    ),
    Case(
        "enum-missing",
        _device("io"),
        "mode:",
        "points.mode.enum",
        "enum points need an enum mapping (raw value: name)",
        {"io": _profile("io", "points:\n  mode: {table: holding, address: 0, type: enum}\n")},
        file="io",
    ),
    Case(
        "sbo-read-only",
        _device("io"),
        "sbo",
        "points.trip.control",
        "select-before-operate (control: sbo) needs a writable point",
        {"io": _profile("io", "points:\n  trip: {table: holding, address: 0, control: sbo}\n")},
        file="io",
    ),
    Case(
        "repeat-template",
        _device("dali"),
        "lamp:",
        "repeat[0].points.lamp",
        "names in a repeat block must contain {i}",
        {
            "dali": _profile(
                "dali", "repeat:\n  - {count: 2, stride: 10, points: {lamp: {table: holding, address: 0}}}\n"
            )
        },
        file="dali",
    ),
    Case(
        "repeat-expression",
        _device("dali"),
        "{count",
        "repeat[0]",
        "unknown name 'lines' in '7000 * lines' (parameters: line)",
        {
            "dali": _profile(
                "dali",
                "parameters: {line: {default: 0}}\nrepeat:\n"
                "  - {count: 2, base: 7000 * lines, stride: 10, points: {'l_{i}': {table: holding, address: 0}}}\n",
            )
        },
        file="dali",
    ),
    Case(
        "forbidden-range",
        _device("meter"),
        "b:",
        "points.b",
        "'b' lies in the forbidden range 10..19",
        {
            "meter": _profile(
                "meter",
                "limits: {forbidden: [{start: 10, end: 19}]}\n"
                "points:\n  a: {table: input, address: 0}\n  b: {table: input, address: 12}\n",
            )
        },
        file="meter",
    ),
    Case(
        "one-based-zero",
        _device("meter"),
        "0}",
        "points.a.address",
        "address 0 is below 1 but the profile uses 1-based addressing",
        {"meter": _profile("meter", "limits: {addressing: 1}\npoints:\n  a: {table: input, address: 0}\n")},
        file="meter",
    ),
    Case(
        "address-overflow",
        _device("meter"),
        "65535,",
        "points.a.address",
        "point ends at 65536, beyond the last address 65535",
        {"meter": _profile("meter", "points:\n  a: {table: input, address: 65535, type: uint32}\n")},
        file="meter",
    ),
    Case(
        "unknown-type",
        _device("meter"),
        "float",
        "points.a.type",
        "must be 'bool', 'int16', 'uint16', 'int32', 'uint32', 'int64', 'uint64', 'float32', 'float64', 'string', "
        "'bit', 'bitfield' or 'enum', got 'float'",
        {"meter": _profile("meter", "points:\n  a: {table: input, address: 0, type: float}\n")},
        file="meter",
    ),
    Case(
        "scale-on-string",
        _device("meter"),
        "2}",
        "points.a.scale",
        "scale applies to numeric types only, not string",
        {"meter": _profile("meter", "points:\n  a: {table: input, address: 0, type: string, length: 4, scale: 2}\n")},
        file="meter",
    ),
    Case(
        "missing-source",
        _device("meter"),
        "name",
        "source",
        "missing required key 'source'",
        {"meter": "name: meter\nmanufacturer: T\nmodel: M\ndescription: d\n"},
        file="meter",
    ),
]


# What `run` refuses at start, `check` refuses too, at the key's own line (field trial, integrator 8).
RUN_REFUSES = [
    Case(
        "missing-tls-ca",
        HEADER + "mqtt:\n  tls:\n    ca: certs/ca.pem\n",
        "certs/ca.pem",
        "mqtt.tls.ca",
        "{dir}/certs/ca.pem does not exist",
    ),
    Case(
        "missing-client-key",
        HEADER + "mqtt:\n  tls: {cert: profiles/client.yaml, key: client.key}\n",
        "client.key",
        "mqtt.tls.key",
        "{dir}/client.key does not exist",
        profiles={"client": "not a certificate\n"},
    ),
    Case(
        "unset-password-variable",
        HEADER + "mqtt:\n  username: gw\n  password_env: CE_NEVER_SET_PASSWORD\n",
        "CE_NEVER_SET_PASSWORD",
        "mqtt.password_env",
        "environment variable CE_NEVER_SET_PASSWORD is not set",
    ),
    Case(
        "missing-password-file",
        HEADER + "mqtt:\n  username: gw\n  password_file: secrets/mqtt-password\n",
        "secrets/mqtt-password",
        "mqtt.password_file",
        "cannot read {dir}/secrets/mqtt-password: No such file or directory",
    ),
    Case(
        "missing-profile-dir",
        HEADER + "profile_dirs: [profiles, site-profiles]\n",
        "site-profiles",
        "profile_dirs[1]",
        "directory {dir}/site-profiles does not exist",
        profiles={"x": _profile("x", "points:\n  v: {address: 0}\n")},
    ),
    Case(
        "profile-dir-is-a-file",
        HEADER + "profile_dirs: [profiles/x.yaml]\n",
        "profiles/x.yaml",
        "profile_dirs[0]",
        "{dir}/profiles/x.yaml is not a directory",
        profiles={"x": _profile("x", "points:\n  v: {address: 0}\n")},
    ),
    Case(
        "device-class-typo",
        _device("meter"),
        "frequncy",
        "points.f.device_class",
        "unknown device_class 'frequncy' (did you mean 'frequency'?): use one of Home Assistant's sensor or "
        "binary sensor device classes",
        {"meter": _profile("meter", "points:\n  f: {address: 0, unit: Hz, device_class: frequncy}\n")},
        file="meter",
    ),
]
CASES += RUN_REFUSES


def _locate(text: str, needle: str, nth: int) -> tuple[int, int]:
    index = -1
    for _ in range(nth):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_broken_file_is_reported_exactly(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, target = write_site(tmp_path, case.config, case.profiles, case.file)
    if case.at == "\n":  # a syntax error at the end of the file
        line, column = target.read_text().count("\n") + 1, 1
    else:
        line, column = _locate(target.read_text(), case.at, case.nth)

    status = main(["check", "-c", str(config)])

    err = capsys.readouterr().err
    key = f" {case.key}:" if case.key else ""
    expected = f"{target}:{line}:{column}:{key} {case.message.replace('{dir}', str(tmp_path))}"
    assert status == 2
    assert expected in err.splitlines(), f"expected\n  {expected}\ngot\n{err}"
    assert "Traceback" not in err


def test_all_problems_are_reported_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(
        HEADER + LINKS + "devices:\n"
        "  - {id: a, profile: sdm630, link: bus, unit: 1}\n"
        "  - {id: b, profile: eastron-sdm630, link: nowhere, unit: 2, poll: 1x}\n"
        "  - {id: c, profile: eastron-sdm630, link: nowhere, unit: 2}\n"
    )
    assert main(["check", "-c", str(config)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len([line for line in err if str(config) in line]) == 3  # schema, reference and profile problems together
    assert err[-1] == "3 problems found"


@pytest.mark.parametrize("case", RUN_REFUSES[:5], ids=[c.id for c in RUN_REFUSES[:5]])
def test_run_refuses_the_same_at_the_same_place(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, target = write_site(tmp_path, case.config, case.profiles, case.file)
    line, column = _locate(target.read_text(), case.at, case.nth)
    assert main(["run", "-c", str(config)]) == 2  # before connecting to anything
    expected = f"{target}:{line}:{column}: {case.key}: {case.message.replace('{dir}', str(tmp_path))}"
    assert expected in capsys.readouterr().err.splitlines()


def test_mqtt_protocol_5_may_be_written_as_a_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(HEADER + "mqtt: {protocol: 5}\n")
    assert main(["check", "-c", str(config)]) == 0
    config.write_text(HEADER + "mqtt: {protocol: 3}\n")
    assert main(["check", "-c", str(config)]) == 2
    assert "mqtt.protocol: must be '3.1.1' or '5', got 3" in capsys.readouterr().err


def test_check_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    config = tmp_path / "site.yaml"
    config.write_text(HEADER + LINKS + "devices:\n  - {id: m, profile: eastron-sdm630, link: bus, unit: 7}\n")
    assert main(["check", "-c", str(config), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["gateway"]["id"] == "cab-1"
    assert [(d["id"], d["unit"], d["link"]) for d in report["devices"]] == [("m", 7, "bus")]
    assert report["points"] == report["devices"][0]["points"] > 10
    config.write_text(HEADER + LINKS + "devices:\n  - {id: m, profile: sdm630, link: bus, unit: 7}\n")
    assert main(["check", "-c", str(config), "--json"]) == 2
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert problems == [
        {
            "file": str(config),
            "line": 6,
            "column": _locate(config.read_text(), "sdm630", 1)[1],
            "key": "devices[0].profile",
            "message": "unknown profile 'sdm630' (did you mean 'eastron-sdm630'?)",
        }
    ]


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err.splitlines()[0] == f"{tmp_path / 'nope.yaml'}:1:1: file not found"


def test_profile_errors_also_reported_by_profiles_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "io.yaml"
    path.write_text(_profile("io", "points:\n  relay: {table: coil, address: 0, type: float32}\n"))
    assert main(["profiles", "check", str(path)]) == 2
    assert f"{path}:7:42: points.relay.type: coil points are single bits: type must be bool, not float32" in (
        capsys.readouterr().err.splitlines()
    )
