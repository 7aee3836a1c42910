"""A broker session is settings: two MqttLinks in one gateway, each with its own client id, birth and Will.

The second one stands for an output like Sparkplug B, whose NDEATH is a Will of its own:
when that session dies, the broker says so on its topic, and the CityEdge tree's session
stays online.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.config.model import GatewayConfig
from gateway.north.message import Kind
from gateway.north.mqtt import MqttLink, Presence, Session, gateway_session
from gateway.north.queue import MessageQueue
from hil.broker import MosquittoBroker
from tests.mqtt_harness import Watcher
from tests.waiting import until
from tests.wire import Wire


async def test_two_sessions_each_with_its_own_will(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    config = GatewayConfig.model_validate(
        {
            "gateway": {"id": "box"},
            "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "keepalive": 5},
            "store": {"path": str(tmp_path / "outbox.db")},
        }
    )
    wire = Wire(mosquitto.host, mosquitto.port)
    await wire.start()
    death = b'{"state":"dead"}'
    other = Session("box-sparkplug", Presence("spBv1.0/city/NDEATH/box", b'{"state":"born"}', death))
    through_wire = config.mqtt.model_copy(update={"host": wire.host, "port": wire.port})
    watcher = Watcher(mosquitto)
    await watcher.start()
    tree = MqttLink(config.mqtt, MessageQueue(), gateway_session(config))
    second = MqttLink(through_wire, MessageQueue(), other)
    second.sleep = _never_again  # once cut, it stays away: the broker must speak for it
    tree.start()
    second.start()
    try:
        await until(lambda: tree.connected.is_set() and second.connected.is_set(), 10, "both sessions")
        assert (tree.client_id, second.client_id) == ("cityedge-box", "box-sparkplug")
        born = await watcher.wait_for(lambda s: s.topic == "spBv1.0/city/NDEATH/box", what="the birth")
        assert born.payload == b'{"state":"born"}'
        second.publish("spBv1.0/city/NDATA/box", {"seq": 1}, Kind.TELEMETRY)
        await watcher.wait_for(lambda s: s.topic == "spBv1.0/city/NDATA/box", what="data on the second session")

        since = len(watcher.seen)
        await wire.cut(0.1)  # no goodbye: the broker publishes the second session's Will
        will = await watcher.wait_for(
            lambda s: s.topic == "spBv1.0/city/NDEATH/box" and s.payload == death, since=since, timeout=20, what="Will"
        )
        assert will.payload == death
        late = Watcher(mosquitto)  # a subscriber arriving later still learns the session is dead
        await late.start()
        try:
            kept = await late.wait_for(lambda s: s.topic == "spBv1.0/city/NDEATH/box", what="the retained Will")
            assert kept.retain and kept.payload == death
        finally:
            await late.stop()
        assert tree.connected.is_set()
        statuses = [s for s in watcher.seen[since:] if s.topic == "cityedge/box/status"]
        assert statuses == []  # the CityEdge tree's own Will was not touched
        tree.publish("cityedge/box/meter/state", {"v": 1}, Kind.TELEMETRY)
        await watcher.wait_for(lambda s: s.topic == "cityedge/box/meter/state", since=since, what="the tree, still up")
    finally:
        await tree.stop()
        await second.stop()
        await watcher.stop()
        await wire.stop()


async def _never_again(seconds: float) -> None:
    await asyncio.sleep(3600)
