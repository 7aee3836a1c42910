"""The `cityedge` command: exit statuses, summaries and listings, run as an integrator would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "cabinet-17.yaml"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )


def test_check_shipped_example_exits_0_with_summary() -> None:
    here = run("check", "-c", str(EXAMPLE))  # for a cabinet: its CA, password and profile directory are not here
    assert here.returncode == 2
    assert [line.split(": ", 2)[1] for line in here.stderr.splitlines()[:-1]] == [
        "mqtt.password_env",
        "mqtt.tls.ca",
        "profile_dirs[0]",
    ]
    result = run("check", "-c", str(EXAMPLE), "--portable")
    assert result.returncode == 0, result.stderr
    assert f"{EXAMPLE}: OK" in result.stdout
    assert "rs485-1          modbus-rtu /dev/ttyUSB0 9600 8E1" in result.stdout
    assert "feeder-meter     eastron-sdm630 on rs485-1 unit 1, 17 points every 1s" in result.stdout
    assert result.stderr == ""


def test_check_says_what_the_gateway_will_do_on_its_own(tmp_path: Path) -> None:
    """Lighting targets, every alarm rule (the profiles' included, a configured one replacing a shipped one, a
    device opting out), indicators, and where the metrics and the dashboard will listen."""
    example = ROOT / "docs" / "integrator" / "examples" / "automated-cabinet.yaml"
    report = json.loads(run("check", "-c", str(example), "--portable", "--json").stdout)
    rules = {r["id"]: r for r in report["alarms"]}
    assert len(rules) == len(report["alarms"]) == 19
    assert sorted(r["id"] for r in report["alarms"] if not r["shipped"]) == [
        "day-burner-0", "meter-silent", "outfall-leak", "overcurrent", "pole-silent", "river-flood", "river-high",
    ]  # fmt: skip
    assert rules["feeder-relay.breaker-tripped"] == {
        "id": "feeder-relay.breaker-tripped", "device": "feeder-relay", "severity": "critical",
        "condition": "feeder-relay.tripped is True", "shipped": True,
    }  # fmt: skip
    assert rules["outfall-leak"]["condition"] == "outfall-flow.flow above 0.5 for 10m, 01:00-05:00 Europe/Madrid"
    assert [t["id"] for t in report["lighting"]["targets"]] == ["street", "square"]
    assert report["indicators"]["levels"] == ["river"]
    assert report["web"] == {"metrics": "http://127.0.0.1:9464/metrics", "dashboard": "http://127.0.0.1:8080/"}

    text = example.read_text()
    mine = "{id: feeder-relay.breaker-tripped, device: feeder-relay, point: tripped, equals: true, severity: major, "
    mine += "delay: 2s}"
    text = text.replace("  - {id: meter-silent,", f"  - {mine}\n  - {{id: meter-silent,")
    text = text.replace("params: {ballasts: 8, groups: 2}}", "params: {ballasts: 8, groups: 2}, alarms: false}")
    text = text.replace("metrics: {}", "metrics: {host: 0.0.0.0, port: 9500, tls: {cert: c.pem, key: k.pem}}")
    changed = tmp_path / "cabinet.yaml"
    changed.write_text(text)
    result = run("check", "-c", str(changed), "--portable")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "  alarms   11: 8 configured, 3 from profiles (4 critical, 5 major, 2 minor)" in lines
    assert "    feeder-relay.breaker-tripped major    feeder-relay.tripped is True for 2s" in lines
    gone = ("from its profile: lamp-failure", "from its profile: breaker-tripped")  # opted out, and replaced
    assert not any(line.endswith(gone) for line in lines)
    assert "  metrics  https://0.0.0.0:9500/metrics" in lines  # listening beyond this machine: not said otherwise
    assert "  dashboard http://127.0.0.1:8080/ (this machine only)" in lines
    assert "  indicators every 15m: 2 lamp groups, 1 feeder, 1 level" in lines


def test_a_command_loads_only_what_it_needs(tmp_path: Path) -> None:
    """`cityedge users list` on a cabinet's Raspberry Pi does not load the probe, the node tools or the emulator."""
    users = tmp_path / "users.json"
    users.write_text('{"users": {}}')
    code = (
        "import sys; from gateway.cli import main; code = main(['users', 'list', '-f', sys.argv[1]]); "
        "print(code, sorted(m for m in sys.modules if m.startswith('gateway.cli.')))"
    )
    command = [sys.executable, "-c", code, str(users)]
    shown = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    assert shown.stdout.splitlines()[-1] == "0 ['gateway.cli.errors', 'gateway.cli.users']", shown.stdout + shown.stderr
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("cityedge ")
    everything = run("--help")
    assert everything.returncode == 0 and all(c in everything.stdout for c in ("check", "mbus", "read", "hil"))
    unknown = run("chek", "-c", "x.yaml")
    assert unknown.returncode == 2 and "invalid choice: 'chek' (choose from 'run', 'demo', 'check'" in unknown.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "cityedge"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and result.stdout.startswith("cityedge ")


def test_bad_config_exits_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway: {id: x}\nlinks: [{id: a, type: modbus-tcp, host: h, port: 0}]\n")
    result = run("check", "-c", str(bad))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{bad}:2:50: links[0].port: must be greater than or equal to 1, got 0",
        "1 problem found",
    ]


def test_usage_errors_exit_2() -> None:
    assert run().returncode == 2
    assert run("check").returncode == 2  # -c is required
    assert run("frobnicate").returncode == 2


def test_profiles_list_and_show() -> None:
    listing = run("profiles", "list")
    assert listing.returncode == 0
    for name in ("eastron-sdm630", "dali-modbus-gateway", "esp32-pole-sensor", "magflow-meter"):
        assert name in listing.stdout
    show = run("profiles", "show", "eastron-sdm630")
    assert show.returncode == 0
    row = next(line for line in show.stdout.splitlines() if line.startswith("voltage_l1 "))
    assert row.split() == ["voltage_l1", "input", "0", "float32", "ABCD", "V", "r"]
    relay = run("profiles", "show", "feeder-protection-relay", "--json")
    points = {p["point"]: p for p in json.loads(relay.stdout)["points"]}
    assert points["breaker_command"]["access"] == "w sbo"
    assert points["current_l1"]["scale"] == "x0.1"


def test_profiles_show_unknown_suggests() -> None:
    result = run("profiles", "show", "sdm630")
    assert result.returncode == 2
    assert result.stderr.strip() == "cityedge: error: unknown profile 'sdm630' (did you mean 'eastron-sdm630'?)"


def test_profiles_schema_prints_json() -> None:
    result = run("profiles", "schema", "config")
    assert result.returncode == 0
    assert json.loads(result.stdout)["title"] == "CityEdge gateway configuration"


def test_runtime_failure_exits_1_and_traceback_only_with_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def explode(_args: object) -> int:
        raise RuntimeError("serial port vanished")

    from gateway.cli import check

    monkeypatch.setattr(check, "run", explode)
    assert cli.main(["check", "-c", "x.yaml"]) == 1
    err = capsys.readouterr().err
    assert err == "cityedge: error: serial port vanished\n"
    assert cli.main(["--debug", "check", "-c", "x.yaml"]) == 1
    assert "Traceback" in capsys.readouterr().err
