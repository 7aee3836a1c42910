"""What the gateway leaves on disk: the outbox within store.max_mb (WAL and index included), private files.

Also the warnings about settings that work but expose the gateway: a password file
others can read, a remote broker reached without TLS or authentication.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import stat
from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from gateway.config.model import MqttSettings, StoreSettings
from gateway.north.message import Kind, Outgoing
from gateway.north.mqtt import security_warnings
from gateway.north.outbox import Outbox


def _on_disk(path: Path) -> int:
    return sum(
        Path(f"{path}{suffix}").stat().st_size for suffix in ("", "-wal", "-shm") if Path(f"{path}{suffix}").exists()
    )


@pytest.mark.parametrize(("max_mb", "messages"), [(0.25, 8_000), (2.0, 30_000)])
async def test_the_files_on_disk_stay_within_max_mb(tmp_path: Path, max_mb: float, messages: int) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(StoreSettings(path=path, max_mb=max_mb, sync="normal"))  # a long outage: no broker at all
    rng = random.Random(3)
    budget = int(max_mb * 1024 * 1024)
    largest = 0
    for i in range(40):
        box.put(Outgoing("cityedge/x/event", json.dumps({"alarm": i}).encode(), Kind.EVENT))
    for i in range(messages):
        pad = "x" * rng.randrange(20, 900)  # telemetry of every size, as real devices send
        box.put(Outgoing(f"cityedge/x/d{i % 50}/state", json.dumps({"seq": i, "pad": pad}).encode(), Kind.TELEMETRY))
        if i % 300 == 0:
            box.flush()
            largest = max(largest, _on_disk(path))
    box.flush()
    largest = max(largest, _on_disk(path))
    assert largest <= budget, f"{largest} bytes on disk for a budget of {budget}"
    assert box.disk_bytes() == _on_disk(path)
    status = box.status()
    assert status["dropped"]["telemetry"] > 0 and status["dropped"]["event"] == 0
    assert status["bytes_on_disk"] <= budget
    await box.stop()


async def test_outbox_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0)  # the loosest an operator's shell can have
    try:
        path = tmp_path / "state" / "cityedge" / "outbox.db"
        box = Outbox(StoreSettings(path=path))
        for i in range(10):
            box.put(Outgoing("cityedge/x/state", json.dumps({"i": i}).encode(), Kind.TELEMETRY))
        box.flush()
        files = [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")]
        assert all(f.exists() for f in files)
        for directory in (path.parent, path.parent.parent):
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
        for f in files:
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        await box.stop()
    finally:
        os.umask(previous)


async def test_an_existing_outbox_file_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    box = Outbox(StoreSettings(path=path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    await box.stop()


def test_a_password_file_others_can_read_is_warned_about(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    settings = MqttSettings(username="gw", password_file=secret)
    (warning,) = security_warnings(settings)
    assert "can be read by every user" in warning and "chmod 600" in warning and "s3cret" not in warning
    secret.chmod(0o600)
    assert security_warnings(settings) == []


@pytest.mark.parametrize(
    ("mqtt", "warned"),
    [
        ({"host": "10.20.0.9"}, True),
        ({"host": "broker.city.example"}, True),
        ({"host": "10.20.0.9", "username": "gw", "password_env": "X"}, False),
        ({"host": "10.20.0.9", "tls": {}}, False),
        ({"host": "127.0.0.1"}, False),
        ({"host": "::1"}, False),
        ({"host": "localhost"}, False),
    ],
)
def test_a_remote_broker_without_tls_or_login_is_warned_about(mqtt: dict[str, object], warned: bool) -> None:
    warnings = security_warnings(MqttSettings.model_validate(mqtt))
    assert bool([w for w in warnings if "neither TLS nor" in w]) == warned


def test_check_shows_the_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump({"gateway": {"id": "cab"}, "mqtt": {"host": "10.20.0.9"}}))
    assert main(["check", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert "warning: the broker 10.20.0.9 is not on this machine" in out


async def test_the_gateway_logs_the_warnings_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from gateway.app import Gateway

    caplog.set_level(logging.WARNING)
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o604)
    config = tmp_path / "gw.yaml"
    data = {
        "gateway": {"id": "cab"},
        "mqtt": {"host": "127.0.0.1", "port": 1, "username": "gw", "password_file": str(secret)},
        "store": {"path": str(tmp_path / "outbox.db")},
    }
    config.write_text(yaml.safe_dump(data))
    gateway = Gateway(config)
    await asyncio.sleep(0)
    assert any("can be read by every user" in r.getMessage() for r in caplog.records)
    assert not any("s3cret" in r.getMessage() for r in caplog.records)
    await gateway.queue.stop()
