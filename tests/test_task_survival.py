"""Long-lived tasks never die of one message: the connection loop, the outbox writer, link schedulers, publishers.

Each survives an exception while handling one item (counted in `<base>/health`, the
item dropped or set aside), and a task that still ends is restarted and reported.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config.model import StoreSettings
from gateway.core.supervision import InputFaults, Supervisor
from gateway.north.message import Kind, Outgoing
from gateway.north.outbox import Outbox
from hil.broker import MosquittoBroker
from tests.mqtt_harness import Rig, peer_rig
from tests.peers import ModbusPeer, float32
from tests.waiting import until

BASE = "cityedge/hard"


@pytest.fixture
async def rig(mosquitto: MosquittoBroker, tmp_path: Path) -> AsyncIterator[Rig]:
    peer = ModbusPeer()
    peer.unit(1).set_float32(0x00, float32(231.0))
    meter = {"id": "meter", "profile": "eastron-sdm630", "link": "net", "unit": 1, "poll": 0.1}
    meter["report"] = {"mode": "periodic"}
    async with peer_rig(mosquitto, tmp_path, peer, [meter], nodes=[{"id": "pole-1"}]) as rig:
        yield rig


def _rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0])


async def test_a_node_timestamp_beyond_sqlite_does_not_stop_the_outbox(rig: Rig) -> None:
    w = rig.watcher
    await w.topic(f"{BASE}/meter/state")
    for ts in (2**63, 2**64 + 5, -1, 10**30, 1):
        await w.send("nodes/pole-1/telemetry", f'{{"ts": {ts}, "seq": 1, "values": {{"temp": 20.5}}}}')
    health = await w.wait_for(
        lambda s: s.topic == f"{BASE}/health" and s.json()["dropped_inputs"].get("node_bad_timestamp", 0) >= 5,
        timeout=10,
    )
    assert health.json()["tasks"]["troubled"] == {}
    # The writer still writes: while the broker is away, the meter's states go to disk.
    rig.broker.stop()
    db = rig.tmp / "outbox.db"
    await until(lambda: _rows(db) >= 20, 10, "states written to the outbox during the outage")
    since = len(w.seen)
    rig.broker.start()
    await w.wait_for(lambda s: s.topic == f"{BASE}/status" and s.json() == {"state": "online"}, since=since, timeout=15)
    now = int(time.time() * 1000)
    await w.send("nodes/pole-1/telemetry", f'{{"ts": {now}, "seq": 2, "values": {{"temp": 21.5}}}}')
    state = await w.wait_for(lambda s: s.topic == f"{BASE}/pole-1/state" and s.json()["seq"] == 2, timeout=15)
    assert state.json()["values"] == {"temperature": 21.5}


async def test_the_connection_loop_survives_a_failing_birth_and_an_unexpected_error(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = rig.watcher
    await w.topic(f"{BASE}/meter/state")
    mqtt = rig.gateway.mqtt
    broken = {"left": 2}
    original = mqtt._on_connected

    async def flaky(client: Any, host: str, port: int) -> None:
        if broken["left"]:
            broken["left"] -= 1
            raise RuntimeError("a bug on the connection path")
        await original(client, host, port)

    monkeypatch.setattr(mqtt, "_on_connected", flaky)

    def bad_hook() -> None:
        raise KeyError("a feature whose birth message fails")

    mqtt.on_connect(bad_hook)
    since = len(w.seen)
    rig.broker.restart()
    await w.wait_for(lambda s: s.topic == f"{BASE}/status" and s.json() == {"state": "online"}, since=since, timeout=20)
    await w.wait_for(lambda s: s.topic == f"{BASE}/meter/availability", since=since, timeout=10)
    assert broken["left"] == 0
    assert rig.gateway.faults.counts["birth_hook"] >= 1


async def test_a_crashed_link_scheduler_is_restarted_and_reported(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    w = rig.watcher
    await w.topic(f"{BASE}/meter/state")
    scheduler = rig.gateway.engine.links["net"]
    original = scheduler._next_group
    crashes = {"left": 1}

    def crash_once() -> Any:
        if crashes["left"]:
            crashes["left"] -= 1
            raise RuntimeError("a bug in the scheduler")
        return original()

    monkeypatch.setattr(scheduler, "_next_group", crash_once)
    since = len(w.seen)
    health = await w.wait_for(
        lambda s: s.topic == f"{BASE}/health" and s.json()["tasks"]["restarts"] >= 1, since=since, timeout=10
    )
    troubled = health.json()["tasks"]["troubled"]
    assert troubled["link net"]["restarts"] == 1 and "a bug in the scheduler" in troubled["link net"]["last_error"]
    mark = len(w.seen)
    await w.wait_for(lambda s: s.topic == f"{BASE}/meter/state", since=mark, timeout=5)  # polling goes on


async def test_a_failing_periodic_publisher_runs_again(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    w = rig.watcher
    await w.topic(f"{BASE}/health")
    store = rig.gateway.store
    original = store.gateway_health
    failures = {"left": 2}

    def flaky() -> dict[str, Any]:
        if failures["left"]:
            failures["left"] -= 1
            raise ValueError("one bad health round")
        return original()

    monkeypatch.setattr(store, "gateway_health", flaky)
    since = len(w.seen)
    seen = await w.wait_for(
        lambda s: s.topic == f"{BASE}/health" and "periodic_failed" in s.json()["dropped_inputs"],
        since=since,
        timeout=10,
    )
    # Both bad rounds were taken (one may fall to a publish on a device's health change, which the bus logs),
    # and the publisher came back with a health message that counts the periodic ones.
    assert failures["left"] == 0
    assert 1 <= seen.json()["dropped_inputs"]["periodic_failed"] <= 2


async def test_the_supervisor_restarts_a_task_that_fails_and_reports_it() -> None:
    runs: list[int] = []

    async def fails_twice() -> None:
        runs.append(1)
        if len(runs) <= 2:
            raise RuntimeError(f"failure {len(runs)}")
        await asyncio.sleep(3600)

    supervisor = Supervisor()
    supervisor.spawn("worker", fails_twice)
    await until(lambda: len(runs) == 3, 5, "two restarts")
    status = supervisor.to_json()
    assert status["restarts"] == 2 and status["running"] == 1
    assert status["troubled"]["worker"]["last_error"] == "RuntimeError: failure 2"
    await supervisor.stop()
    assert supervisor.to_json()["running"] == 0


async def test_a_task_whose_library_turns_cancellation_into_an_error_still_stops() -> None:
    runs: list[int] = []

    async def converts() -> None:  # as aiomqtt does when cancelled while connecting
        runs.append(1)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("disconnected") from None

    supervisor = Supervisor()
    supervisor.spawn("client", converts)
    await until(lambda: runs, 5, "started")
    await asyncio.wait_for(supervisor.cancel("client"), 10)
    assert runs == [1] and supervisor.to_json()["restarts"] == 0  # stopped, not restarted


async def test_an_unstorable_message_is_set_aside_and_the_rest_is_written(tmp_path: Path) -> None:
    faults = InputFaults()
    box = Outbox(StoreSettings(path=tmp_path / "outbox.db"), faults=faults)
    box.put(Outgoing("cityedge/x/state", b"{}", Kind.TELEMETRY, ts=2**70))
    box.put(Outgoing("cityedge/\udcff/state", b"{}", Kind.TELEMETRY))  # a topic SQLite cannot encode
    for i in range(5):
        box.put(Outgoing(f"cityedge/d{i}/state", b"{}", Kind.TELEMETRY))
    box.flush()
    box.flush()
    assert faults.counts["outbox_bad_timestamp"] == 1 and faults.counts["outbox_unstorable"] == 1
    assert _rows(tmp_path / "outbox.db") == 6
    await box.stop()


def test_a_refused_input_is_logged_on_one_line_whatever_it_carries(caplog: pytest.LogCaptureFixture) -> None:
    faults = InputFaults()
    faults.reject("node_bad_json", "nodes/evil\nFAKE LOG LINE\x1b[31m/\udcff/telemetry", "x" * 5000)
    (record,) = caplog.records
    message = record.getMessage()
    assert "\n" not in message and "\x1b" not in message and "\udcff" not in message
    assert "FAKE LOG LINE" in message and len(message) < 600
    message.encode("utf-8")  # no lone surrogate left to break a log shipper
