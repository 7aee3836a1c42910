"""Configurations that used to hang, spin, exhaust memory or crash: each is refused, at its line, at once.

Every file is checked by `cityedge check` in a forked process with a memory and a
CPU limit, so an alias bomb or an endless repeat block fails the test by hitting the
limit instead of hanging the suite. Each must exit 2 with `file:line:` and the key.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from tests.config_files import write_site

HEADER = "gateway: {id: cab-1}\n"
LINK = "links:\n  - {id: net, type: modbus-tcp, host: 127.0.0.1}\n"
DEVICE = "devices:\n  - {id: m, profile: eastron-sdm630, link: net, unit: 1}\n"
MEMORY = 768 * 1024 * 1024  # bytes the check may add to what the process already maps
CPU_SECONDS = 2  # far above the few milliseconds a check takes; a hang or a spin ends here


def _laughs(levels: int) -> str:
    """The billion-laughs alias bomb: each level holds nine of the one before."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _merges(levels: int) -> str:
    """The same bomb through merge keys: each mapping merges the one before twice."""
    lines = ["m0: &m0 {a: 1, b: 2}"]
    lines += [f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: {i}}}" for i in range(1, 40)]
    return "\n".join(lines) + "\n"


def _profile(name: str, body: str) -> str:
    head = f"name: {name}\nmanufacturer: Test\nmodel: T1\ndescription: test device\nsource: test sheet\n"
    return head + textwrap.dedent(body)


def _override(fields: str) -> str:
    """A shipped meter whose voltage_l1 point is overridden with `fields`."""
    return (
        HEADER
        + LINK
        + "devices:\n  - {id: d1, profile: eastron-sdm630, link: net, unit: 1, "
        + f"overrides: {{voltage_l1: {fields}}}}}\n"
    )


def _with_profile(profile: str = "meter") -> str:
    return (
        HEADER + LINK + f"profile_dirs: [profiles]\ndevices:\n  - {{id: d1, profile: {profile}, link: net, unit: 1}}\n"
    )


@dataclass
class Case:
    id: str
    config: str
    at: str  # text on the reported line (its first occurrence)
    key: str
    message: str  # a part of the message
    profiles: dict[str, str] = field(default_factory=dict)
    file: str = "config"


CASES = [
    # The budget runs out in the first entry that expands past it: l5 holds 9^6 values, m12 2^12 merges.
    Case("alias-bomb", HEADER + "x:\n" + textwrap.indent(_laughs(9), "  "), "l5:", "x.l5", "expands to more than"),
    Case("merge-bomb", HEADER + "x:\n" + textwrap.indent(_merges(40), "  "), "m12:", "x.m12", "expands to more"),
    Case("recursive-list", HEADER + "devices: &d [*d]\n", "*d", "devices[0]", "recursive alias"),
    Case("recursive-map", "gateway: &g {id: x, again: *g}\n", "*g", "gateway.again", "recursive alias"),
    Case("recursive-merge", HEADER + "mqtt: &m {<<: *m, port: 1}\n", "*m", "mqtt", "recursive alias"),
    Case("deep-list", HEADER + "x: " + "[" * 5000 + "]" * 5000 + "\n", "x:", "", "nested more than 64 levels"),
    Case("deep-map", HEADER + "x: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n", "x:", "", "nested more than 64"),
    Case(
        "deep-through-aliases",
        HEADER + "".join(f"a{i}: &a{i} [{'*a' + str(i - 1) if i else 1}]\n" for i in range(80)),
        "a62:",
        "a62",
        "nested more than 64 levels deep (through aliases)",
    ),
    Case(
        "repeat-hundred-million",
        _with_profile(),
        "100000000",
        "repeat[0].count",
        "must be between 0 and 4096",
        {
            "meter": _profile(
                "meter",
                "repeat:\n  - count: 100000000\n    stride: 1\n    points:\n      p_{i}: {table: input, address: 0}\n",
            )
        },
        file="meter",
    ),
    Case(
        "repeat-expression-huge",
        HEADER + LINK + "profile_dirs: [profiles]\n"
        "devices:\n  - {id: d1, profile: meter, link: net, unit: 1, params: {n: 2000000000}}\n",
        "params",
        "devices[0].params",
        "count must be between 0 and 4096, got 2000000000",
        {
            "meter": _profile(
                "meter",
                "parameters: {n: {default: 1, min: 1}}\n"
                "repeat:\n  - count: n\n    stride: 1\n    points:\n      p_{i}: {table: input, address: 0}\n",
            )
        },
    ),
    Case(
        "poll-nan",
        HEADER + LINK + DEVICE.replace("unit: 1", "unit: 1, poll: .nan"),
        ".nan",
        "devices[0].poll",
        "bad duration nan: must be a finite number of seconds",
    ),
    Case(
        "poll-nan-text",
        HEADER + LINK + DEVICE.replace("unit: 1", "unit: 1, poll: NaN s"),
        "NaN",
        "devices[0].poll",
        "bad duration 'NaN s'",
    ),
    Case(
        "poll-infinite",
        HEADER + LINK + DEVICE.replace("unit: 1", "unit: 1, poll: .inf"),
        ".inf",
        "devices[0].poll",
        "must be a finite number of seconds",
    ),
    Case(
        "poll-negative",
        HEADER + LINK + DEVICE.replace("unit: 1", "unit: 1, poll: -1"),
        "poll: -1",
        "devices[0].poll",
        "must not be negative",
    ),
    Case(
        "health-interval-zero",
        "gateway: {id: cab-1, health_interval: 0}\n",
        "0}",
        "gateway.health_interval",
        "must be between 1s and 1d, got 0s",
    ),
    Case(
        "device-address-huge",
        HEADER + LINK + "devices:\n  - {id: d1, profile: eastron-sdm630, link: net, address: " + "9" * 23 + "}\n",
        "99999999999999999999999",
        "devices[0].address",
        "must be between 0 and 4294967295, got 1e+23",
    ),
    Case(
        "device-address-long-text",
        HEADER + LINK + "devices:\n  - {id: d1, profile: eastron-sdm630, link: net, address: " + "A" * 200 + "}\n",
        "AAAA",
        "devices[0].address",
        "at most 64 characters",
    ),
    Case(
        "override-scale-nan",
        _override("{scale: .nan}"),
        ".nan",
        "devices[0].overrides.voltage_l1.scale",
        "must be a finite number, got nan",
    ),
    Case(
        "override-min-infinite",
        _override("{min: -.inf}"),
        "-.inf",
        "devices[0].overrides.voltage_l1.min",
        "must be a finite number, got -inf",
    ),
    Case(
        "override-decimals-huge",
        _override("{decimals: 99999999999999999999}"),
        "99999999999999999999",
        "devices[0].overrides.voltage_l1.decimals",
        "must be less than or equal to 12",
    ),
    Case(
        "override-unit-nested",
        _override("{unit: {a: {b: [1]}}}"),
        "{a:",
        "devices[0].overrides.voltage_l1.unit",
        "must be a valid string, got a mapping",
    ),
    Case("max-mb-infinite", HEADER + "store: {max_mb: .inf}\n", ".inf", "store.max_mb", "finite number"),
    Case("max-mb-zero", HEADER + "store: {max_mb: 0}\n", "0}", "store.max_mb", "must be between 0.1 and 1000000"),
    Case(
        "keepalive-beyond-mqtt",
        HEADER + "mqtt: {keepalive: 100000}\n",
        "100000",
        "mqtt.keepalive",
        "must be between 1s and 65535s",
    ),
    Case("keepalive-nan", HEADER + "mqtt: {keepalive: .nan}\n", ".nan", "mqtt.keepalive", "bad duration"),
    Case(
        "sbo-timeout-hour",
        "gateway: {id: cab-1, sbo_timeout: 1h}\n",
        "1h",
        "gateway.sbo_timeout",
        "must be between 1s and 10m, got 1h",
    ),
    Case(
        "sbo-timeout-years",
        "gateway: {id: cab-1, sbo_timeout: 1000000000}\n",
        "1000000000",
        "gateway.sbo_timeout",
        "must be between 0s and 365d",
    ),
    Case(
        "link-timeout-zero",
        HEADER + "links:\n  - {id: net, type: modbus-tcp, host: h, timeout: 0}\n",
        "0}",
        "links[0].timeout",
        "must be between 1ms and 1m",
    ),
    Case(
        "scale-nan",
        _with_profile(),
        ".nan",
        "points.a.scale",
        "must be a finite number",
        {"meter": _profile("meter", "points:\n  a: {table: input, address: 0, scale: .nan}\n")},
        file="meter",
    ),
    Case(
        "scale-absurd",
        _with_profile(),
        "1.0e300",
        "points.a.scale",
        "scale must be between 1e-12 and 1e12 in size",
        {"meter": _profile("meter", "points:\n  a: {table: input, address: 0, scale: 1.0e300}\n")},
        file="meter",
    ),
    Case(
        "min-minus-infinity",
        _with_profile(),
        "-.inf",
        "points.a.min",
        "finite number",
        {"meter": _profile("meter", "points:\n  a: {table: holding, address: 0, access: rw, min: -.inf, max: 1}\n")},
        file="meter",
    ),
    Case(
        "deadband-nan",
        HEADER + LINK + DEVICE.replace("unit: 1", "unit: 1, report: {deadband: .nan}"),
        ".nan",
        "devices[0].report.deadband",
        "finite number",
    ),
    Case("replay-rate-infinite", HEADER + "store: {replay_rate: .inf}\n", ".inf", "store.replay_rate", "finite number"),
    Case(
        "param-enormous",
        HEADER + LINK + DEVICE.replace("unit: 1", "unit: 1, params: {line: 1" + "0" * 40 + "}"),
        "params",
        "devices[0].params.line",
        "must be between",
    ),
    Case(
        "stale-after-zero",
        HEADER + "nodes:\n  - {id: pole, stale_after: 0}\n",
        "0}",
        "nodes[0].stale_after",
        "must be between 1s and 7d",
    ),
    Case(
        "max-backoff-infinite",
        HEADER + LINK + DEVICE.replace("unit: 1", "unit: 1, max_backoff: .inf"),
        ".inf",
        "devices[0].max_backoff",
        "finite",
    ),
    Case(
        "expression-endless",
        _with_profile(),
        "address_base",
        "address_base",
        "at most 200 characters",
        {"meter": _profile("meter", "address_base: " + "+".join(["1"] * 5000) + "\npoints: {a: {table: input}}\n")},
        file="meter",
    ),
    Case(
        "pause-minutes",
        _with_profile(),
        "pause",
        "limits.pause",
        "must be between 0s and 10s",
        {"meter": _profile("meter", "limits: {pause: 5m}\npoints: {a: {table: input, address: 0}}\n")},
        file="meter",
    ),
    Case("max-age-negative", HEADER + "store: {max_age: -5}\n", "-5", "store.max_age", "must not be negative"),
    Case(
        "duration-digits",
        HEADER + "mqtt: {keepalive: 99999999999999999999999d}\n",
        "999",
        "mqtt.keepalive",
        "bad duration",
    ),
    Case(
        "reconnect-zero",
        HEADER + "mqtt: {reconnect_max: 0}\n",
        "0}",
        "mqtt.reconnect_max",
        "must be between 500ms and 10m",
    ),
]


def _bounded_check(config: Path) -> tuple[int, str]:
    """`cityedge check -c config` in a forked child with memory and CPU limits: (exit status, output)."""
    out = config.with_suffix(".out")
    mapped = _mapped_bytes()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        with contextlib.suppress(BaseException):
            resource.setrlimit(resource.RLIMIT_AS, (mapped + MEMORY, mapped + MEMORY))
            resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS + 1))
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "w", closefd=False) as stream:
                sys.stdout = sys.stderr = stream  # pytest's capture objects stay out of it
                code = main(["check", "-c", str(config)])
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.read_text(errors="replace")


def _mapped_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_configuration_is_refused_at_its_line(case: Case, tmp_path: Path) -> None:
    config, target = write_site(tmp_path, case.config, case.profiles, case.file)
    text = target.read_text()
    line = text.count("\n", 0, text.index(case.at)) + 1

    status, output = _bounded_check(config)

    assert status == 2, f"exit {status} (a signal or MemoryError means the limit was hit):\n{output[-2000:]}"
    prefix = f"{target}:{line}:"
    key = f" {case.key}:" if case.key else ""
    found = [row for row in output.splitlines() if row.startswith(prefix) and key in row and case.message in row]
    assert found, f"expected {prefix}...{key} ...{case.message}... in\n{output[-2000:]}"
    assert "Traceback" not in output


def test_there_are_thirty_kinds() -> None:
    assert len({c.id for c in CASES}) >= 30


def test_a_byte_that_is_not_utf8_is_reported_at_its_line(tmp_path: Path) -> None:
    config = tmp_path / "site.yaml"
    config.write_bytes(b"gateway: {id: cab-1}\n# fine\n# fine too\nmqtt: {host: caf\xe9}\n")
    status, output = _bounded_check(config)
    assert status == 2
    assert f"{config}:4:17: not UTF-8 text: byte 0xe9" in output


@pytest.mark.parametrize(
    ("mqtt", "key", "message"),
    [
        ({"password_env": "CE_NOT_SET_ANYWHERE"}, "mqtt.password_env", "environment variable CE_NOT_SET_ANYWHERE"),
        ({"password_file": "missing-password"}, "mqtt.password_file", "cannot read"),
        ({"tls": {"ca": "missing-ca.pem"}}, "mqtt.tls.ca", "missing-ca.pem does not exist"),
        ({"tls": {"cert": "c.pem", "key": "k.pem"}}, "mqtt.tls.cert", "c.pem does not exist"),
    ],
    ids=["password-env", "password-file", "tls-ca", "tls-cert"],
)
def test_run_locates_a_missing_secret_at_its_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mqtt: dict[str, object], key: str, message: str
) -> None:
    config = tmp_path / "gw.yaml"
    data = {"gateway": {"id": "cab-1"}, "mqtt": {"host": "127.0.0.1", **mqtt}, "store": {"path": "outbox.db"}}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    first_key = key.rsplit(".", 1)[-1]
    line = next(n for n, row in enumerate(config.read_text().splitlines(), 1) if row.strip().startswith(first_key))
    assert main(["run", "-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert any(
        row.startswith(f"{config}:{line}:") and f" {key}: " in row and message in row for row in err.splitlines()
    )


# The keys this stop added (plausible ranges, Home Assistant hints, the node grace): hostile values refused at
# their line in plain words, never a traceback.
NEW_KEYS = [
    ("{plausible: [.nan, 500]}", "plausible[0]: must be a finite number, got nan"),
    ("{plausible: [0, .inf]}", "plausible[1]: must be a finite number, got inf"),
    ("{plausible: [0, 1e400]}", "plausible[1]: must be a finite number"),
    ("{plausible: [500, 0]}", "plausible: plausible is [low, high] with low below high"),
    ("{plausible: [[[[1]]], 2]}", "plausible[0]: must be a valid integer, got a list"),
    ("{plausible: [1, 2, 3]}", "plausible: has 3 items, at most 2 allowed"),
    ("{entity: light}", "entity: a light is a writable number with a max"),
    ("{category: secret}", "category: must be 'config' or 'diagnostic', got 'secret'"),
]


@pytest.mark.parametrize(("fields", "says"), NEW_KEYS, ids=[f for f, _ in NEW_KEYS])
def test_hostile_values_of_the_new_point_keys(fields: str, says: str, tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(_override(fields))
    code, out = _bounded_check(path)
    assert code == 2 and f"devices[0].overrides.voltage_l1.{says}" in out and "Traceback" not in out


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("1e400", "bad duration '1e400'"),
        (".nan", "must be a finite number of seconds"),
        ("-5", "must not be negative"),
        ("10000000", "must be between 0s and 1h"),
        ("[[[[1]]]]", "mqtt.node_grace:"),
    ],
)
def test_hostile_node_grace(value: str, says: str, tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(HEADER + f"mqtt: {{node_grace: {value}}}\n")
    code, out = _bounded_check(path)
    assert code == 2 and says in out and "Traceback" not in out
