"""No false alarms when the broker restarts (field trial, operator 13).

Two plain MQTT clients play ESP32 nodes with the firmware's Will (`nodes/<id>/status`
offline, retained): one comes back after the broker does, as a node with backoff would;
the other stays away. The broker is restarted for real, so its Wills fire as they do in
the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import aiomqtt

from hil.broker import MosquittoBroker
from tests.mqtt_harness import Watcher, plain_config, start_gateway

BASE = "cityedge/hard"


async def _node(
    broker: MosquittoBroker, node_id: str, stop: asyncio.Event, dies: asyncio.Event, keepalive: int = 2
) -> None:
    """A node: connects with its Will, says online and reports, reconnects 1 s after losing the broker
    (unless it `dies` meanwhile: then it never comes back)."""
    will = aiomqtt.Will(f"nodes/{node_id}/status", b"offline", qos=1, retain=True)
    while not stop.is_set():
        try:
            async with aiomqtt.Client(
                broker.host, broker.port, identifier=f"node-{node_id}", will=will, keepalive=keepalive
            ) as client:
                await client.publish(f"nodes/{node_id}/status", b"online", qos=1, retain=True)
                while not stop.is_set():
                    body = {"ts": int(time.time() * 1000), "values": {"lux": 10.0}}
                    await client.publish(f"nodes/{node_id}/telemetry", json.dumps(body), qos=1)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.5)
        except aiomqtt.MqttError:
            if dies.is_set():
                return
            await asyncio.sleep(1.0)


async def test_a_broker_restart_raises_no_alarm_for_nodes_that_come_back(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    path = plain_config(
        tmp_path / "gw.yaml", mosquitto, nodes=[{"id": "back"}, {"id": "gone"}], mqtt={"node_grace": "4s"}
    )
    watcher = Watcher(mosquitto)
    await watcher.start()
    gateway = await start_gateway(path)
    stop_back, stop_gone, dies = asyncio.Event(), asyncio.Event(), asyncio.Event()
    nodes = [
        asyncio.create_task(_node(mosquitto, "back", stop_back, asyncio.Event())),
        asyncio.create_task(_node(mosquitto, "gone", stop_gone, dies)),
    ]
    try:
        for node in ("back", "gone"):
            await watcher.wait_for(lambda s, n=node: s.topic == f"{BASE}/{n}/availability" and s.payload == b"online")
        dies.set()  # connected while the broker goes down, it will not come back
        await asyncio.to_thread(mosquitto.restart, 1.0)
        since = len(watcher.seen)
        await watcher.wait_for(
            lambda s: s.topic == f"{BASE}/status" and s.json()["state"] == "online", since=since, timeout=20
        )
        offline = await watcher.wait_for(
            lambda s: s.topic == f"{BASE}/event" and s.json()["kind"] == "device_offline", since=since, timeout=20
        )
        assert offline.json()["device"] == "gone" and offline.json()["reason"] == "will"
        await asyncio.sleep(1.0)  # the grace is over for both
        events = [s.json() for s in watcher.seen[since:] if s.topic == f"{BASE}/event"]
        assert not [e for e in events if e["kind"] in ("device_offline", "device_online") and e["device"] == "back"]
        assert gateway.store.get("back").health.state_name == "online"  # type: ignore[union-attr]
        assert gateway.store.get("gone").health.state_name == "offline"  # type: ignore[union-attr]
    finally:
        stop_back.set()
        stop_gone.set()
        for task in nodes:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
        await gateway.stop()
        await watcher.stop()


async def test_outside_the_grace_a_node_that_drops_is_reported_at_once(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    path = plain_config(tmp_path / "gw.yaml", mosquitto, nodes=[{"id": "n1"}], mqtt={"node_grace": "1s"})
    watcher = Watcher(mosquitto)
    await watcher.start()
    gateway = await start_gateway(path)
    try:
        await asyncio.sleep(1.5)  # the gateway's connection is older than the grace
        await watcher.send("nodes/n1/status", b"online")
        await watcher.wait_for(lambda s: s.topic == f"{BASE}/n1/availability" and s.payload == b"online")
        since = len(watcher.seen)
        started = time.monotonic()
        await watcher.send("nodes/n1/status", b"offline")
        await watcher.wait_for(
            lambda s: s.topic == f"{BASE}/event" and s.json()["kind"] == "device_offline", since=since, timeout=5
        )
        assert time.monotonic() - started < 3.0  # the Will waits 1.5 s to see whether the broker goes down with it
    finally:
        await gateway.stop()
        await watcher.stop()
