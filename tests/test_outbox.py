"""The durable outbox against a real mosquitto: broker restarts, SIGKILLed gateways, full disks, corrupt files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml

from gateway.config.model import GatewayConfig, StoreSettings
from gateway.north.message import Kind, Outgoing
from gateway.north.mqtt import MqttLink, gateway_session
from gateway.north.outbox import Outbox
from hil.broker import ClosedPort, MosquittoBroker
from hil.fixtures import SiteFactory
from hil.site.scenario import gateway_config
from tests.waiting import until
from tests.wire import Wire

ROOT = Path(__file__).resolve().parent.parent


class Collector:
    """A persistent-session subscriber: the broker keeps its messages while it is away.

    Each message is kept the moment it arrives, before the client acknowledges it: aiomqtt's
    own queue would drop what it still holds when the connection ends, and a broker kill then
    looks like a loss the gateway caused.
    """

    def __init__(self, broker: MosquittoBroker, topic: str) -> None:
        self.broker, self.topic = broker, topic
        self.payloads: list[bytes] = []
        self.properties: list[Any] = []
        self.ready = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    def _keep(self, message: aiomqtt.Message) -> None:
        self.payloads.append(message.payload)  # type: ignore[arg-type]
        self.properties.append(message.properties)

    async def _run(self) -> None:
        keep = self._keep

        class Keeper(asyncio.Queue[aiomqtt.Message]):
            def put_nowait(self, item: aiomqtt.Message) -> None:
                keep(item)

        while True:
            try:
                async with aiomqtt.Client(
                    self.broker.host,
                    self.broker.port,
                    identifier="collector",
                    protocol=aiomqtt.ProtocolVersion.V5,
                    clean_start=False,
                    properties=_session_expiry(),
                    queue_type=Keeper,
                ) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.ready.set()
                    async for _ in client.messages:  # ends when the connection does; Keeper has kept each one
                        pass
            except aiomqtt.MqttError:
                self.ready.clear()
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def _session_expiry() -> Any:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600  # keep the session (and its queued messages) while away
    return props


def link_for(broker_port: int, store: Path, **store_extra: Any) -> MqttLink:
    config = GatewayConfig.model_validate(
        {
            "gateway": {"id": "box"},
            "mqtt": {"port": broker_port, "keepalive": 2},
            "store": {"path": str(store), **store_extra},
        }
    )
    return MqttLink(config.mqtt, Outbox(config.store), gateway_session(config))


@pytest.mark.long
async def test_nothing_lost_across_ten_outages(tmp_path: Path) -> None:
    """Ten wire cuts (both ends reset, no goodbye), five with a broker restart, while numbered messages flow.

    Broker restarts are clean (SIGTERM) so the broker saves what it acknowledged: a SIGKILLed
    mosquitto can lose a message it acknowledged just before its next save, which is the
    broker's half of the guarantee (docs/operator/store-and-forward.md), not the gateway's.
    """
    broker = MosquittoBroker(persistence=True)
    broker.start()
    wire = Wire(broker.host, broker.port)
    await wire.start()
    collector = Collector(broker, "cityedge/box/meter/state")
    link = link_for(wire.port, tmp_path / "outbox.db", replay_rate=5000)
    link.queue.start()
    link.start()
    produced = 0

    async def produce() -> None:
        nonlocal produced
        while True:
            link.publish("cityedge/box/meter/state", {"seq": produced}, Kind.TELEMETRY)
            produced += 1
            await asyncio.sleep(0.004)

    try:
        await asyncio.wait_for(collector.ready.wait(), 10)
        producer = asyncio.create_task(produce())
        for outage in range(10):
            await until(link.connected.is_set, 15, f"reconnected before outage {outage}")
            await asyncio.sleep(0.6)  # the cut meets a live session with messages in flight
            if outage % 2:  # the broker restarts while the wire refuses connections
                async with wire.down():
                    await asyncio.to_thread(broker.restart, 0.4)
            else:
                await wire.cut(0.4)
        await asyncio.sleep(0.5)
        producer.cancel()
        seqs = lambda: {json.loads(p)["seq"] for p in collector.payloads}  # noqa: E731
        with contextlib.suppress(AssertionError):
            await until(lambda: seqs() >= set(range(produced)), 60, "every sequence number")
        missing = sorted(set(range(produced)) - seqs())
        assert not missing, f"{len(missing)} of {produced} missing: {missing[:20]}; outbox {link.queue.status()}"
        duplicates = len(collector.payloads) - len(seqs())
        assert produced > 500
        assert wire.cuts == 10 and link.stats.connects >= 11, link.stats
        assert duplicates < produced * 0.2  # duplicates are acceptable (and counted here), loss is not
        replayed = [p for p in collector.properties if p is not None and getattr(p, "UserProperty", None)]
        assert any(("replay", "true") in p.UserProperty for p in replayed)  # backlog is marked
    finally:
        await link.stop()
        await link.queue.stop()
        await collector.stop()
        await wire.stop()
        broker.close()


def _stored(path: Path) -> int:
    """Telemetry rows in an outbox a gateway may be writing right now (0 before it exists)."""
    if not path.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            return int(db.execute("SELECT count(*) FROM messages WHERE kind = ?", (int(Kind.TELEMETRY),)).fetchone()[0])
    except sqlite3.Error:  # the schema is not written yet
        return 0


def _run_gateway(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "-c", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_sigkilled_gateway_during_an_outage_delivers_everything(
    site_factory: SiteFactory, tmp_path: Path
) -> None:
    site = await site_factory(
        {
            "links": [{"id": "net", "type": "modbus-tcp"}],
            "devices": [{"id": "meter", "profile": "eastron-sdm120", "link": "net", "unit": 1, "poll": 0.2}],
        }
    )
    reserved = ClosedPort()  # where the broker will be: refused until it starts, and nobody else's meanwhile
    port = reserved.port
    data = gateway_config(site.loaded, site.endpoint_addresses())
    data["devices"][0]["report"] = {"mode": "periodic"}
    data["mqtt"] = {"port": port, "keepalive": 2}
    data["store"] = {"path": str(tmp_path / "outbox.db")}
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump(data))
    for life in range(3):  # the broker is down: everything goes to the outbox; then the power is cut
        gateway = _run_gateway(config)
        before = _stored(tmp_path / "outbox.db")
        await until(lambda b=before: _stored(tmp_path / "outbox.db") >= b + 6, 30, f"life {life} storing")  # type: ignore[misc]
        gateway.send_signal(signal.SIGKILL)
        gateway.wait(10)
    db = sqlite3.connect(tmp_path / "outbox.db")
    stored = {
        (topic, ts) for topic, ts in db.execute("SELECT topic, ts FROM messages WHERE kind = ?", (int(Kind.TELEMETRY),))
    }
    db.close()
    assert len(stored) >= 18  # three lives of at least six stored polls each
    with MosquittoBroker(port=reserved.release()) as broker:
        collector = Collector(broker, "cityedge/#")
        await asyncio.wait_for(collector.ready.wait(), 10)
        gateway = _run_gateway(config)
        try:

            def received() -> set[tuple[str, int]]:
                return {
                    ("cityedge/" + data["gateway"]["id"] + "/meter/state", json.loads(p)["ts"])
                    for p in collector.payloads
                    if p.startswith(b'{"ts"')
                }

            await until(lambda: stored <= received(), 30, "every stored message")
        finally:
            gateway.send_signal(signal.SIGTERM)
            _, err = gateway.communicate(timeout=20)
            await collector.stop()
    assert gateway.returncode == 0, err
    assert "messages from before the restart will be delivered" in err


async def test_the_disk_bound_holds_and_telemetry_goes_first(tmp_path: Path) -> None:
    store = StoreSettings(path=tmp_path / "outbox.db", max_mb=0.25)
    notes: list[dict[str, Any]] = []
    box = Outbox(store, on_drop=notes.append)  # no broker at all: a long outage
    for i in range(40):
        box.put(Outgoing("cityedge/x/event", json.dumps({"alarm": i}).encode(), Kind.EVENT))
    sizes = []
    for i in range(20_000):
        box.put(Outgoing("cityedge/x/meter/state", json.dumps({"seq": i, "pad": "x" * 100}).encode(), Kind.TELEMETRY))
        if i % 1000 == 0:
            box.flush()
            sizes.append((len(box._pending), box._row_bytes))  # what memory and disk hold
    box.flush()
    assert box._row_bytes <= 0.25 * 1024 * 1024
    assert max(pending for pending, _ in sizes) <= 5000  # memory stays flat: only the unwritten batch
    status = box.status()
    assert status["dropped"]["telemetry"] > 15_000 and status["dropped"]["event"] == 0
    assert notes and notes[0]["reason"] == "disk budget store.max_mb reached"
    db = sqlite3.connect(tmp_path / "outbox.db")
    kinds = dict(db.execute("SELECT kind, COUNT(*) FROM messages GROUP BY kind").fetchall())
    newest = db.execute("SELECT MAX(id) FROM messages").fetchone()[0]
    db.close()
    assert kinds[int(Kind.EVENT)] == 40  # every alarm kept
    assert newest == box._next_id - 1  # the newest telemetry is kept; the oldest went
    assert box.disk_bytes() < 2 * 1024 * 1024
    await box.stop()
    reopened = Outbox(store)
    assert reopened.status()["dropped"]["telemetry"] == status["dropped"]["telemetry"]  # counters survive
    await reopened.stop()


async def test_corrupt_file_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is not a database, it is a mess" * 100)
    box = Outbox(StoreSettings(path=path))
    assert box.mode == "disk"
    moved = list(tmp_path.glob("outbox.db.corrupt-*"))
    assert len(moved) == 1 and moved[0].read_bytes().startswith(b"this is not a database")
    assert any("is corrupt" in r.message and "starting a fresh outbox" in r.message for r in caplog.records)
    box.put(Outgoing("t", b"{}", Kind.EVENT))
    box.flush()
    assert box.status()["depth"] == 1
    await box.stop()


async def test_unwritable_store_keeps_the_gateway_running_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store directory should be")
    box = Outbox(StoreSettings(path=blocker / "outbox.db"))
    assert box.mode == "memory" and "cannot open" in (box.problem or "")
    box.put(Outgoing("t/state", b"{}", Kind.TELEMETRY))
    assert [m.topic for m in await box.take(10)] == ["t/state"]
    await box.stop()


async def test_full_disk_switches_to_memory_without_losing_messages(tmp_path: Path) -> None:
    box = Outbox(StoreSettings(path=tmp_path / "outbox.db"))
    assert box.db is not None
    box.db.execute("PRAGMA max_page_count = 20")  # a disk with no room left
    for i in range(2000):
        box.put(Outgoing("t/state", json.dumps({"seq": i, "pad": "y" * 200}).encode(), Kind.TELEMETRY))
        if i % 100 == 0:
            box.flush()
    box.flush()
    assert box.mode == "memory" and "full" in (box.problem or "")
    in_memory = await box.take(100_000)
    on_disk = sqlite3.connect(tmp_path / "outbox.db").execute("SELECT payload FROM messages").fetchall()
    seqs = {json.loads(m.payload)["seq"] for m in in_memory} | {json.loads(p)["seq"] for (p,) in on_disk}
    assert seqs == set(range(2000))  # every message is either on disk or in memory
    await box.stop()


async def test_replay_is_rate_limited_and_live_data_goes_first(tmp_path: Path) -> None:
    box = Outbox(StoreSettings(path=tmp_path / "outbox.db", replay_rate=50))
    for i in range(200):
        box.put(Outgoing("old/state", str(i).encode(), Kind.TELEMETRY, ts=1000 + i))
    box.flush()
    box.on_connect()
    box.put(Outgoing("live/state", b"now", Kind.TELEMETRY))
    first = await box.take(64)
    assert first[0].topic == "live/state"  # live data is not starved by the backlog
    box.done(first)
    replayed = [m for m in first if m.topic == "old/state"]
    loop = asyncio.get_running_loop()
    start = loop.time()
    while len(replayed) < 200:
        batch = await box.take(64)
        replayed += batch
        box.done(batch)
    assert [int(m.payload) for m in replayed] == list(range(200))  # oldest first
    assert replayed[0].ts == 1000 and replayed[0].properties == {"replay": True}  # original time, marked
    rate = 200 / (loop.time() - start)
    assert rate < 50 * 1.5  # about replay_rate, never a flood
    await box.stop()
    assert os.path.exists(tmp_path / "outbox.db")
