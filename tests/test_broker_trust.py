"""Trust on the broker: a node answers only for itself, a select token reaches only its requester, ACLs confine.

Fake nodes and operators are plain MQTT clients, some of them hostile; the broker is
a real mosquitto, with the ACL file `cityedge acl` generates where the test says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import redirect_stdout
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.cli import main
from gateway.north import mqtt as mqtt_module
from hil.broker import MosquittoBroker
from tests.mqtt_harness import Rig, Watcher, peer_rig, plain_config
from tests.peers import ModbusPeer
from tests.waiting import until

BASE = "cityedge/hard"
USERS = {"gw": "gw-pw", "pole-1": "p1-pw", "pole-2": "p2-pw", "ops": "ops-pw", "eve": "eve-pw"}


def _props(response_topic: str, correlation: bytes = b"c") -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = response_topic
    props.CorrelationData = correlation
    return props


async def _node_online(w: Watcher, node: str) -> None:
    await w.send(f"nodes/{node}/status", b"online", retain=True)
    now = int(time.time() * 1000)
    await w.send(f"nodes/{node}/telemetry", json.dumps({"ts": now, "seq": 1, "values": {"temp": 20}}))


@pytest.fixture
async def rig(mosquitto: MosquittoBroker, tmp_path: Path) -> AsyncIterator[Rig]:
    peer = ModbusPeer()
    peer.unit(2)
    relay = {"id": "relay", "profile": "feeder-protection-relay", "link": "net", "unit": 2, "poll": 0.5}
    async with peer_rig(mosquitto, tmp_path, peer, [relay], nodes=[{"id": "pole-1"}, {"id": "pole-2"}]) as rig:
        yield rig


async def test_a_node_command_result_counts_only_from_that_node(rig: Rig) -> None:
    w = rig.watcher
    await w.topic(f"{BASE}/status")
    await _node_online(w, "pole-1")
    await w.wait_for(lambda s: s.topic == f"{BASE}/pole-1/availability" and s.payload == b"online")
    since = len(w.seen)
    command = asyncio.create_task(w.command(BASE, "pole-1", {"values": {"report_interval": 60}}, timeout=15))
    sent = await w.wait_for(lambda s: s.topic == "nodes/pole-1/cmd", since=since)
    request_id = sent.json()["id"]
    # Another node, and a forgery on pole-1's topic with a made-up id, both try to answer first.
    await w.send("nodes/pole-2/cmd/result", json.dumps({"id": request_id, "status": "error", "error": "hijacked"}))
    await w.send("nodes/pole-1/cmd/result", json.dumps({"id": "guessed", "status": "error", "error": "forged"}))
    await asyncio.sleep(0.3)
    assert not command.done()
    await w.send("nodes/pole-1/cmd/result", json.dumps({"id": request_id, "status": "ok"}))
    result = await command
    assert result["status"] == "ok" and result["values"] == {"report_interval": 60}
    assert rig.gateway.faults.counts["node_foreign_result"] == 1


async def test_the_select_token_reaches_only_its_requester(rig: Rig) -> None:
    w = rig.watcher
    await w.topic(f"{BASE}/relay/availability")
    eve = Watcher(rig.broker, topics=(f"{BASE}/#",))  # reads the whole gateway tree
    await eve.start()
    try:
        since = len(w.seen)
        select = {"transaction": "s1", "select": {"breaker_command": "open"}}
        await w.send(f"{BASE}/relay/set", json.dumps(select), properties=_props("replies/ops/1"))
        reply = await w.wait_for(lambda s: s.topic == "replies/ops/1", since=since)
        token = reply.json()["token"]
        await asyncio.sleep(0.3)
        assert not [s for s in eve.seen if token in s.payload.decode(errors="replace")]
        # Even holding the token, another client (without the requester's response topic) cannot operate.
        stolen = await eve.command(BASE, "relay", {"values": {"breaker_command": "open"}, "token": token})
        assert stolen["status"] == "error" and stolen["error"]["code"] == "select_expired"
        assert "another response topic" in stolen["error"]["message"]
        # The requester selects again and operates from its own response topic.
        since = len(w.seen)
        await w.send(
            f"{BASE}/relay/set", json.dumps({**select, "transaction": "s2"}), properties=_props("replies/ops/1")
        )
        token = (await w.wait_for(lambda s: s.topic == "replies/ops/1", since=since)).json()["token"]
        operate = {"transaction": "o2", "values": {"breaker_command": "open"}, "token": token}
        await w.send(f"{BASE}/relay/set", json.dumps(operate), properties=_props("replies/ops/1"))
        done = await w.wait_for(lambda s: s.topic == "replies/ops/1" and s.json()["transaction"] == "o2", since=since)
        assert done.json()["status"] == "ok"
        audit = await w.wait_for(
            lambda s: s.topic == f"{BASE}/event" and s.json().get("transaction") == "o2", since=since
        )
        assert audit.json()["sender"] == {"response_topic": "replies/ops/1", "correlation_data": "63"}
    finally:
        await eve.stop()


@pytest.mark.parametrize("target", ["nodes/pole-1/cmd", f"{BASE}/status", "homeassistant/status", "$SYS/x"])
async def test_a_response_topic_cannot_aim_the_gateway_at_its_own_trees(rig: Rig, target: str) -> None:
    w = rig.watcher
    await w.topic(f"{BASE}/status")
    since = len(w.seen)
    body = {"transaction": "aim", "values": {"nope": 1}}
    await w.send(f"{BASE}/relay/set", json.dumps(body), properties=_props(target))
    result = await w.wait_for(lambda s: s.topic == f"{BASE}/relay/set/result", since=since)
    assert result.json()["transaction"] == "aim"
    assert not [s for s in w.seen[since:] if s.topic == target and b"aim" in s.payload]


def _acl(config: Path) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["acl", "-c", str(config), "--operator", "ops"]) == 0
    return out.getvalue()


async def _client_publish(broker: MosquittoBroker, user: str, topic: str, payload: bytes) -> None:
    async with aiomqtt.Client(broker.host, broker.port, username=user, password=USERS[user]) as client:
        await client.publish(topic, payload, qos=1)  # the broker acknowledges a denied publish and drops it


async def test_the_generated_acl_confines_nodes_operators_and_the_gateway(tmp_path: Path) -> None:
    broker = MosquittoBroker(users=USERS)
    config = plain_config(
        tmp_path / "gw.yaml",
        broker,
        mqtt={"username": "gw", "password_env": "CE_GW_PW"},
        nodes=[{"id": "pole-1"}, {"id": "pole-2"}],
    )
    broker.acl = _acl(config)
    assert "user pole-1" in broker.acl and "topic write nodes/pole-1/telemetry" in broker.acl
    with broker:
        gateway_view = Watcher(broker, topics=("nodes/#", f"{BASE}/#"), username="gw", password=USERS["gw"])
        await gateway_view.start()
        try:
            attempts = [
                ("pole-1", "nodes/pole-1/telemetry", True),  # its own
                ("pole-2", "nodes/pole-1/telemetry", False),  # another node's
                ("pole-2", "nodes/pole-1/cmd/result", False),
                ("pole-1", f"{BASE}/relay/set", False),  # nodes do not command devices
                ("ops", f"{BASE}/relay/set", True),
                ("ops", f"{BASE}/request/health", True),
                ("ops", f"{BASE}/status", False),  # operators do not speak for the gateway
                ("ops", "nodes/pole-1/cmd", False),
                ("eve", f"{BASE}/relay/set", False),  # a user the ACL does not name gets nothing
            ]
            for user, topic, allowed in attempts:
                since = len(gateway_view.seen)
                marker = f"{user}->{topic}".encode()
                await _client_publish(broker, user, topic, marker)
                if allowed:
                    await gateway_view.wait_for(lambda s, m=marker: s.payload == m, since=since, timeout=5)
                else:
                    await asyncio.sleep(0.3)
                    assert not [s for s in gateway_view.seen[since:] if s.payload == marker], (user, topic)
        finally:
            await gateway_view.stop()


async def test_a_taken_client_id_is_reported_and_not_fought_over(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="cityedge.mqtt")
    monkeypatch.setattr(mqtt_module, "TAKEOVER_PAUSE", 0.5)
    w = rig.watcher
    await w.topic(f"{BASE}/status")
    mqtt = rig.gateway.mqtt
    pauses: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded(seconds: float) -> None:
        pauses.append(seconds)
        await real_sleep(seconds)

    mqtt.sleep = recorded
    client_id = rig.gateway.loaded.config.client_id
    broker = w.broker

    story: list[str] = []  # what the twin went through, for the failure message

    async def twin() -> None:  # a second gateway with the same client id, reconnecting whenever it is kicked
        while True:
            try:
                # Each session lasts 2 s at most: a kick that aiomqtt misses (it ignores a disconnect that
                # races its connect) must not leave the twin idle on a dead session for the rest of the test.
                async with asyncio.timeout(2), aiomqtt.Client(broker.host, broker.port, identifier=client_id) as c:
                    story.append("connected")
                    async for _ in c.messages:
                        pass
            except Exception as exc:  # kicked, timed out, or a connect that failed on a busy machine: again
                story.append(repr(exc)[:60])
                await real_sleep(0.1)

    fighting = asyncio.create_task(twin())
    try:
        with contextlib.suppress(AssertionError):
            await until(lambda: mqtt.stats.takeovers >= 3, 45, "three takeovers")
    finally:
        fighting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fighting
    assert mqtt.stats.takeovers >= 3, f"{mqtt.stats}, pauses {pauses}, the twin: {story[:5]} ... {story[-5:]}"
    assert pauses[:3] == [0.5, 1.0, 2.0]  # each conflict doubles the pause: no tight fight over the id
    assert any("another client is connecting with our client id" in r.getMessage() for r in caplog.records)
    since = len(w.seen)
    event = await w.wait_for(
        lambda s: s.topic == f"{BASE}/event" and s.json().get("kind") == "client_id_conflict", timeout=15
    )
    assert event.json()["client_id"] == client_id
    health = await w.wait_for(lambda s: s.topic == f"{BASE}/health", since=since, timeout=15)
    assert health.json()["mqtt"]["takeovers"] >= 3
