"""The gateway as systemd runs it: SIGHUP reloads (applied, or refused with its reason and nothing torn down),
and the unit on the integrator's page is one that keeps the password out of the unit file."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import yaml

from hil.broker import ClosedPort, MosquittoBroker
from tests.mqtt_harness import Watcher
from tests.test_mqtt_security import Run, _online

ROOT = Path(__file__).resolve().parent.parent
BASE = "cityedge/sec"


def _config(tmp: Path, broker: MosquittoBroker, port: int, devices: list[str]) -> Path:
    path = tmp / "gw.yaml"
    data = {
        "gateway": {"id": "sec", "health_interval": 1},
        "mqtt": {"host": broker.host, "port": broker.port},
        "store": {"path": str(tmp / "outbox.db")},
        "links": [{"id": "net", "type": "modbus-tcp", "host": "127.0.0.1", "port": port, "timeout": 0.2}],
        "devices": [
            {"id": d, "profile": "eastron-sdm120", "link": "net", "unit": i + 1, "poll": 1}
            for i, d in enumerate(devices)
        ],
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _device_ids(seen: object) -> set[str]:
    return {d["id"] for d in seen.json()}  # type: ignore[attr-defined]


async def test_sighup_reloads_and_a_bad_file_is_refused_with_its_reason(tmp_path: Path) -> None:
    with MosquittoBroker() as broker, ClosedPort() as meters:
        watcher = Watcher(broker)
        await watcher.start()
        config = _config(tmp_path, broker, meters.port, ["m1"])
        run = Run(config)
        try:
            await _online(watcher)
            await watcher.wait_for(lambda s: s.topic == f"{BASE}/devices" and _device_ids(s) == {"m1"})

            _config(tmp_path, broker, meters.port, ["m1", "m2"])
            since = len(watcher.seen)
            run.proc.send_signal(signal.SIGHUP)
            event = await watcher.wait_for(
                lambda s: s.topic == f"{BASE}/event" and s.json()["kind"] == "reloaded", since=since, what="reloaded"
            )
            assert event.json()["devices_added"] == ["m2"]
            await watcher.wait_for(
                lambda s: s.topic == f"{BASE}/devices" and _device_ids(s) == {"m1", "m2"}, since=since
            )

            config.write_text(config.read_text().replace("eastron-sdm120", "sdm120", 1))
            since = len(watcher.seen)
            run.proc.send_signal(signal.SIGHUP)
            refused = await watcher.wait_for(
                lambda s: s.topic == f"{BASE}/event" and s.json()["kind"] == "reload_refused", since=since
            )
            assert any("unknown profile 'sdm120'" in p for p in refused.json()["problems"])
            health = await watcher.wait_for(lambda s: s.topic == f"{BASE}/health", since=len(watcher.seen))
            assert sum(health.json()["devices"].values()) == 2  # both still run
            assert run.proc.poll() is None  # SIGHUP used to kill the gateway
        finally:
            code, err = run.finish()
            await watcher.stop()
    assert code == 0, err
    assert "configuration reloaded:" in err and "devices_added" in err
    refused_line = next(line for line in err.splitlines() if "configuration not applied" in line)
    assert (
        "1 problem(s)" in refused_line and f"{config}:" in refused_line and "unknown profile 'sdm120'" in refused_line
    )


def test_the_service_unit_reloads_and_keeps_the_password_out_of_the_unit() -> None:
    page = (ROOT / "docs" / "integrator" / "connect-to-a-broker.md").read_text()
    unit = re.search(r"```ini\n(# /etc/systemd/system/cityedge.service\n.*?)```", page, re.S)
    assert unit is not None
    lines = unit.group(1).splitlines()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in lines
    assert "EnvironmentFile=/etc/cityedge/cityedge.env" in lines
    assert not [line for line in lines if line.startswith("Environment=")]
    assert "install -m 0600 /dev/null /etc/cityedge/cityedge.env" in page
