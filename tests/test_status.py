"""`cityedge status`: a running gateway at a glance over MQTT, for an operator without a dashboard."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from hil.broker import ClosedPort, MosquittoBroker
from tests.mqtt_harness import Watcher, plain_config, start_gateway

ROOT = Path(__file__).resolve().parent.parent


def status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "status", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


async def test_status_lists_devices_by_state_with_the_reason_of_each_that_is_not_online(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    with ClosedPort() as nobody:
        path = plain_config(
            tmp_path / "gw.yaml",
            mosquitto,
            links=[{"id": "net", "type": "modbus-tcp", "host": "127.0.0.1", "port": nobody.port, "timeout": 0.2}],
            devices=[{"id": "meter", "profile": "eastron-sdm120", "link": "net", "unit": 1, "poll": 0.3}],
            nodes=[{"id": "pole-1"}],
            alarms=[{"id": "meter-silent", "device": "meter", "offline_for": 1, "severity": "major"}],
        )
        watcher = Watcher(mosquitto)
        await watcher.start()
        gateway = await start_gateway(path)
        try:
            await watcher.send("nodes/pole-1/status", b"online", retain=True)
            await watcher.wait_for(lambda s: s.topic == "cityedge/hard/pole-1/availability" and s.payload == b"online")
            await watcher.wait_for(lambda s: s.topic == "cityedge/hard/meter/health" and s.json()["state"] == "offline")
            await watcher.wait_for(lambda s: s.topic == "cityedge/hard/health")
            await watcher.wait_for(lambda s: s.topic == "cityedge/hard/alarms" and len(s.json()) == 1, what="alarm")
            # the command runs beside the gateway, not in its event loop: a blocked loop would starve its MQTT
            shown = await asyncio.to_thread(status, "-c", str(path))
            assert shown.returncode == 0, shown.stderr
            lines = shown.stdout.splitlines()
            assert lines[0].startswith("cityedge/hard: online, up ")
            assert "  devices  1 online, 1 offline" in lines
            meter = next(line for line in lines if line.strip().startswith("meter"))
            assert ("offline" in meter and "connection refused" in meter.lower()) or "refused" in meter
            assert any(line.startswith("  outbox   ") and "dropped" in line for line in lines)
            assert "  alarms   1 active (1 major)" in lines
            alarm = next(line for line in lines if line.strip().startswith("meter-silent"))
            assert "major" in alarm and "meter offline for 1s, for " in alarm and "(not acknowledged)" in alarm
            data = json.loads((await asyncio.to_thread(status, "-c", str(path), "--json")).stdout)
            assert data["state"] == "online" and data["devices"] == {"online": 1, "offline": 1}
            assert [(d["id"], d["state"]) for d in data["attention"]] == [("meter", "offline")]
            assert [(a["id"], a["severity"], a["active"]) for a in data["alarms"]] == [("meter-silent", "major", True)]
            # Without the configuration, from a laptop: broker and base topic as options.
            bare = await asyncio.to_thread(
                status, "--broker", f"{mosquitto.host}:{mosquitto.port}", "--base", "cityedge/hard", "--json"
            )
            assert json.loads(bare.stdout)["devices"] == data["devices"]
        finally:
            await gateway.stop()
            await watcher.stop()
    stopped = status("-c", str(path))  # the clean stop left {"state": "offline"} retained
    assert stopped.returncode == 1 and stopped.stdout.startswith("cityedge/hard: offline")


def test_status_without_a_gateway_or_a_broker(mosquitto: MosquittoBroker) -> None:
    silent = status("--broker", f"{mosquitto.host}:{mosquitto.port}", "--base", "cityedge/nobody", "--timeout", "1")
    assert silent.returncode == 1 and "nothing heard from a gateway under cityedge/nobody" in silent.stdout
    with ClosedPort() as closed:
        unreachable = status("--broker", f"127.0.0.1:{closed.port}", "--base", "cityedge/x", "--timeout", "1")
    assert unreachable.returncode == 1 and f"cannot reach the broker at 127.0.0.1:{closed.port}" in unreachable.stdout
    usage = status("--base", "cityedge/x")
    assert usage.returncode == 2 and "status needs -c FILE" in usage.stderr


def test_status_survives_hostile_retained_messages(mosquitto: MosquittoBroker) -> None:
    base = "cityedge/hostile"
    for topic, payload in (
        (f"{base}/status", '{"state": "online"}'),
        (f"{base}/health", "[" * 5000 + "]" * 5000),
        (f"{base}/devices", "[NaN, 1e999, {}]"),
        (f"{base}/d1/health", "{not json"),
        (f"{base}/d2/health", '{"state": "offline", "reason": "timeout", "since": 1e999}'),
        (
            f"{base}/alarms",
            '[{"id": "x\\u001b[2J", "severity": "apocalyptic", "active": true, "message": 5, '
            '"raised": "not a date", "acked_by": ["ana"]}, 7, {"id": 3}, {"id": "gone"}]',
        ),
    ):
        subprocess.run(["mosquitto_pub", "-h", mosquitto.host, "-p", str(mosquitto.port), "-r", "-t", topic,
                        "-m", payload], check=True, timeout=10)  # fmt: skip
    shown = status("--broker", f"{mosquitto.host}:{mosquitto.port}", "--base", base, "--timeout", "2")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "Traceback" not in shown.stdout + shown.stderr
    assert "warning  2 retained message(s) under cityedge/hostile could not be read" in shown.stdout
    assert "d2" in shown.stdout and "offline" in shown.stdout and "timeout" in shown.stdout
    assert "  alarms   1 active (1 unknown), 1 cleared, not acknowledged" in shown.stdout
    assert "    x\\x1b[2J  unknown   (not acknowledged)" in shown.stdout and "\x1b" not in shown.stdout
