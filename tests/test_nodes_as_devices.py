"""ESP32 nodes are devices like any other: in the device list, in Home Assistant, readable, in the state store.

A node here is a plain MQTT client speaking the node contract; the firmware itself is
tested against the gateway in test_nodes.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.app import Gateway
from hil.broker import MosquittoBroker
from tests.mqtt_harness import Watcher, plain_config, start_gateway

BASE = "cityedge/hard"


@pytest.fixture
async def rig(mosquitto: MosquittoBroker, tmp_path: Path) -> AsyncIterator[tuple[Watcher, Gateway]]:
    path = plain_config(
        tmp_path / "gw.yaml",
        mosquitto,
        nodes=[{"id": "pole-1"}, {"id": "pole-2"}],
        homeassistant={"enabled": True},
    )
    watcher = Watcher(mosquitto)
    await watcher.start()
    gateway = await start_gateway(path)
    try:
        yield watcher, gateway
    finally:
        await gateway.stop()
        await watcher.stop()


async def _report(w: Watcher, node: str, values: dict[str, object], seq: int = 1) -> int:
    ts = int(time.time() * 1000)
    await w.send(f"nodes/{node}/info", json.dumps({"firmware": "1.4.0", "hardware": "esp32"}), retain=True)
    await w.send(f"nodes/{node}/telemetry", json.dumps({"ts": ts, "seq": seq, "values": values}))
    return ts


async def test_a_node_is_in_the_device_list_with_its_points(rig: tuple[Watcher, Gateway]) -> None:
    w, _ = rig
    await w.topic(f"{BASE}/status")
    await _report(w, "pole-1", {"lux": 120.5})
    await w.wait_for(lambda s: s.topic == f"{BASE}/pole-1/state")
    devices = (await w.request(BASE, "devices"))["data"]
    node = next(d for d in devices if d["id"] == "pole-1")
    assert node["profile"] == "esp32-pole-sensor" and node["source"] == "node"
    assert node["node_topic"] == "nodes/pole-1" and node["info"]["firmware"] == "1.4.0"
    assert node["points"]["illuminance"] == {
        "type": "float32",
        "access": "r",
        "unit": "lx",
        "device_class": "illuminance",
        "state_class": "measurement",
    }
    retained = await w.topic(f"{BASE}/devices")
    assert {d["id"] for d in retained.json()} >= {"pole-1", "pole-2"}


async def test_a_node_is_announced_to_home_assistant(rig: tuple[Watcher, Gateway]) -> None:
    w, _ = rig
    discovery = (await w.topic("homeassistant/device/cityedge_hard_pole-1/config")).json()
    assert discovery["dev"]["mdl"] == "ESP32 pole sensor node"
    assert discovery["state_topic"] == f"{BASE}/pole-1/state"
    lux = discovery["cmps"]["illuminance"]
    assert (lux["p"], lux["device_class"], lux["unit_of_measurement"]) == ("sensor", "illuminance", "lx")
    interval = discovery["cmps"]["report_interval"]
    assert interval["p"] == "number" and (interval["min"], interval["max"]) == (5, 3600)


async def test_a_node_point_is_readable_and_in_the_state_store(rig: tuple[Watcher, Gateway]) -> None:
    w, gateway = rig
    await w.topic(f"{BASE}/status")
    never = await w.request(BASE, "read", {"device": "pole-2", "point": "illuminance"})
    assert never["status"] == "error" and never["error"]["code"] == "no_value"
    ts = await _report(w, "pole-1", {"lux": 88.0, "temp": "warm"})
    await w.wait_for(lambda s: s.topic == f"{BASE}/pole-1/state")
    answer = await w.request(BASE, "read", {"device": "pole-1", "point": "illuminance"})
    assert answer["status"] == "ok" and answer["data"] == {
        "device": "pole-1",
        "point": "illuminance",
        "value": 88.0,
        "ts": ts,
    }
    bad = await w.request(BASE, "read", {"device": "pole-1", "point": "temperature"})
    assert bad["error"]["code"] == "no_value" and "bad value" in bad["error"]["message"]
    reading = gateway.store.reading("pole-1", "illuminance")
    assert reading is not None and (reading.value, reading.error, reading.ts) == (88.0, None, ts)
    failed = gateway.store.reading("pole-1", "temperature")
    assert failed is not None and failed.value is None and failed.error == "bad value 'warm'"
    health = (await w.wait_for(lambda s: s.topic == f"{BASE}/health" and s.json()["devices"]["online"] >= 1)).json()
    assert health["nodes"]["online"] == 1 and health["devices"]["offline"] >= 1  # pole-2 never spoke


async def test_a_node_going_offline_is_an_event_from_the_core(rig: tuple[Watcher, Gateway]) -> None:
    w, _ = rig
    await w.topic(f"{BASE}/status")
    await _report(w, "pole-1", {"lux": 10.0})
    await w.wait_for(lambda s: s.topic == f"{BASE}/pole-1/availability" and s.payload == b"online")
    since = len(w.seen)
    await w.send("nodes/pole-1/status", b"offline")  # the node's Will
    event = await w.wait_for(lambda s: s.topic == f"{BASE}/event" and s.json()["kind"] == "device_offline", since=since)
    assert event.json()["device"] == "pole-1" and event.json()["reason"] == "will"
    await _report(w, "pole-1", {"lux": 11.0}, seq=2)
    back = await w.wait_for(lambda s: s.topic == f"{BASE}/event" and s.json()["kind"] == "device_online", since=since)
    assert back.json() == {"ts": back.json()["ts"], "kind": "device_online", "device": "pole-1"}


async def test_the_node_prefix_is_a_setting(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    path = plain_config(tmp_path / "gw.yaml", mosquitto, mqtt={"node_prefix": "city/poles"}, nodes=[{"id": "p7"}])
    watcher = Watcher(mosquitto)
    await watcher.start()
    gateway = await start_gateway(path)
    try:
        await watcher.topic("city/poles/time")  # the nodes' clock, under the prefix
        ts = int(time.time() * 1000)
        await watcher.send("city/poles/p7/telemetry", json.dumps({"ts": ts, "values": {"lux": 3.5}}))
        state = await watcher.topic(f"{BASE}/p7/state")
        assert state.json()["values"] == {"illuminance": 3.5}
        await watcher.send("nodes/p7/telemetry", json.dumps({"ts": ts, "values": {"lux": 9.9}}))  # the old prefix
        answer = await watcher.request(BASE, "read", {"device": "p7", "point": "illuminance"})
        assert answer["data"]["value"] == 3.5
    finally:
        await gateway.stop()
        await watcher.stop()


async def test_a_node_back_from_an_outage_is_not_shown_with_its_old_health(rig: tuple[Watcher, Gateway]) -> None:
    w, _ = rig
    await w.topic(f"{BASE}/status")
    await _report(w, "pole-1", {"lux": 10.0})
    await w.send("nodes/pole-1/health", {"buffered": 0, "mqtt_reconnects": 0, "uptime_s": 5})
    await w.wait_for(lambda s: s.topic == f"{BASE}/pole-1/health" and s.json()["node"].get("uptime_s") == 5)
    await w.send("nodes/pole-1/status", b"offline")  # the Will: the outage begins
    await w.wait_for(lambda s: s.topic == f"{BASE}/pole-1/availability" and s.payload == b"offline")
    since = len(w.seen)
    await w.send("nodes/pole-1/status", b"online")  # a new session; its health report follows
    back = await w.wait_for(lambda s: s.topic == f"{BASE}/pole-1/health" and s.json()["state"] == "online", since=since)
    assert back.json()["node"] == {}  # not the report from before the outage
    await w.send("nodes/pole-1/health", {"buffered": 22, "mqtt_reconnects": 1, "uptime_s": 40})
    fresh = await w.wait_for(  # after the one without a report: the offline one (old report) may come late
        lambda s: s.topic == f"{BASE}/pole-1/health" and s.json()["node"], since=w.seen.index(back)
    )
    assert fresh.json()["node"]["mqtt_reconnects"] == 1


async def test_a_node_reading_outside_its_plausible_range_is_an_error(rig: tuple[Watcher, Gateway]) -> None:
    """A BME280 that reads 300 °C is broken: an error for that point, not a temperature (field trial, 10)."""
    w, gateway = rig
    await w.topic(f"{BASE}/status")
    await _report(w, "pole-1", {"lux": 88.0, "temp": 300.0, "rh": 45.0})
    state = (await w.wait_for(lambda s: s.topic == f"{BASE}/pole-1/state")).json()
    assert state["values"] == {"illuminance": 88.0, "humidity": 45.0}
    assert state["errors"] == {"temperature": "implausible"}
    device = gateway.store.get("pole-1")
    assert device is not None and device.health.to_json()["implausible"] == 1
