"""The MQTT topic tree against a real mosquitto: states, availability, health, commands, requests, recovery."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.app import Gateway
from hil.broker import MosquittoBroker
from hil.fixtures import SiteFactory
from hil.site.emulated import Site
from tests.mqtt_harness import Watcher, start_gateway, write_gateway_config

BASE = "cityedge/block"
SITE: dict[str, Any] = {
    "name": "block",
    "links": [
        {"id": "bus", "type": "modbus-rtu", "baudrate": 115200, "wire_timing": False},
        {"id": "net", "type": "modbus-tcp"},
    ],
    "devices": [
        {
            "id": "lamps",
            "profile": "dali-modbus-gateway",
            "link": "bus",
            "unit": 2,
            "params": {"ballasts": 4},
            "options": {"fade_time": 0},
        },
        {"id": "meter", "profile": "eastron-sdm630", "link": "bus", "unit": 1},
        {"id": "relay", "profile": "feeder-protection-relay", "link": "net", "unit": 1},
        {"id": "level", "profile": "water-level-logger", "link": "net", "unit": 2},
    ],
}


class World:
    def __init__(self, site: Site, broker: MosquittoBroker, watcher: Watcher, gateway: Gateway, path: Path):
        self.site, self.broker, self.watcher, self.gateway, self.path = site, broker, watcher, gateway, path


@pytest.fixture
async def world(site_factory: SiteFactory, mosquitto: MosquittoBroker, tmp_path: Path) -> AsyncIterator[World]:
    site = await site_factory(SITE)
    path = write_gateway_config(
        site, mosquitto, tmp_path / "gw.yaml", gateway={"sbo_timeout": 1.0}, homeassistant={"enabled": True}
    )
    watcher = Watcher(mosquitto)
    await watcher.start()
    gateway = await start_gateway(path)
    try:
        yield World(site, mosquitto, watcher, gateway, path)
    finally:
        await gateway.stop()
        await watcher.stop()


async def test_the_topic_tree(world: World) -> None:
    w = world.watcher
    status = await w.topic(f"{BASE}/status")
    assert status.json() == {"state": "online"}
    for device in ("lamps", "meter", "relay", "level"):
        assert (await w.topic(f"{BASE}/{device}/availability")).payload == b"online"
        state = (await w.topic(f"{BASE}/{device}/state")).json()
        assert isinstance(state["ts"], int) and state["values"]
        health = (await w.topic(f"{BASE}/{device}/health")).json()
        assert health["state"] == "online" and "rtt" in health and "errors" in health
    meter = (await w.topic(f"{BASE}/meter/state")).json()["values"]
    assert 220 < meter["voltage_l1"] < 240 and meter["frequency"] == pytest.approx(50, abs=0.2)
    devices = {d["id"]: d for d in (await w.topic(f"{BASE}/devices")).json()}
    assert devices["meter"]["points"]["voltage_l1"] == {
        "type": "float32",
        "access": "r",
        "unit": "V",
        "device_class": "voltage",
        "state_class": "measurement",
    }
    assert devices["relay"]["points"]["breaker_command"]["control"] == "sbo"
    health = (await w.wait_for(lambda s: s.topic == f"{BASE}/health" and s.json()["devices"]["online"] == 4)).json()
    assert set(health["links"]) == {"bus", "net"} and health["memory_mb"] > 0 and "outbox" in health
    started = await w.wait_for(lambda s: s.topic == f"{BASE}/event" and s.json()["kind"] == "started")
    assert started.json()["devices"] == 4


async def test_retained_birth_and_home_assistant_discovery(world: World) -> None:
    await world.watcher.topic("homeassistant/device/cityedge_block_meter/config")  # the gateway is up
    late = Watcher(world.broker, ("cityedge/#", "homeassistant/#"))
    await late.start()
    try:
        status = await late.topic(f"{BASE}/status")
        assert status.retain and status.json() == {"state": "online"}
        discovery = (await late.topic("homeassistant/device/cityedge_block_meter/config")).json()
        assert discovery["dev"]["mdl"] == "SDM630 Modbus V2"
        assert discovery["availability_mode"] == "all" and len(discovery["availability"]) == 2
        voltage = discovery["cmps"]["voltage_l1"]
        assert (voltage["p"], voltage["device_class"], voltage["unit_of_measurement"]) == ("sensor", "voltage", "V")
        lamps = (await late.topic("homeassistant/device/cityedge_block_lamps/config")).json()["cmps"]
        assert lamps["ballast_1_arc_power"]["p"] == "light" and lamps["ballast_1_arc_power"]["brightness_scale"] == 100
        assert lamps["ballast_1_lamp_failure"]["p"] == "binary_sensor"
        relay = (await late.topic("homeassistant/device/cityedge_block_relay/config")).json()["cmps"]
        assert "breaker_command" not in relay  # select-before-operate is not offered to HA
        since = len(late.seen)
        await late.send("homeassistant/status", b"online")
        await late.wait_for(lambda s: s.topic == "homeassistant/device/cityedge_block_meter/config", since=since)
    finally:
        await late.stop()


async def test_command_round_trip_and_audit(world: World) -> None:
    w = world.watcher
    await w.topic(f"{BASE}/lamps/availability")
    result = await w.command(BASE, "lamps", {"values": {"ballast_1_arc_power": 25}, "readback": True})
    assert result["status"] == "ok" and result["values"] == {"ballast_1_arc_power": 25}
    await w.wait_for(lambda s: s.topic == f"{BASE}/lamps/state" and s.json()["values"]["ballast_1_level"] == 25)
    audit = await w.wait_for(
        lambda s: s.topic == f"{BASE}/event" and s.json().get("transaction") == result["transaction"]
    )
    assert audit.json()["kind"] == "command" and audit.json()["status"] == "ok"


async def test_select_before_operate(world: World) -> None:
    w = world.watcher
    await w.topic(f"{BASE}/relay/availability")
    refused = await w.command(BASE, "relay", {"values": {"breaker_command": "open"}})
    assert refused["error"]["code"] == "select_required"
    assert world.site.get_value("relay", "breaker_closed") is True
    selected = await w.command(BASE, "relay", {"select": {"breaker_command": "open"}})
    assert selected["status"] == "ok" and selected["expires_ms"] == 1000
    await asyncio.sleep(1.2)
    expired = await w.command(BASE, "relay", {"values": {"breaker_command": "open"}, "token": selected["token"]})
    assert expired["error"]["code"] == "select_expired"
    selected = await w.command(BASE, "relay", {"select": {"breaker_command": "open"}})
    other = await w.command(BASE, "relay", {"values": {"breaker_command": "close"}, "token": selected["token"]})
    assert other["error"]["code"] == "select_expired"  # a different operate cancels the selection
    again = await w.command(BASE, "relay", {"values": {"breaker_command": "open"}, "token": selected["token"]})
    assert again["error"]["code"] == "select_required"
    selected = await w.command(BASE, "relay", {"select": {"breaker_command": "open"}})
    done = await w.command(BASE, "relay", {"values": {"breaker_command": "open"}, "token": selected["token"]})
    assert done["status"] == "ok"
    await w.wait_for(lambda s: s.topic == f"{BASE}/relay/state" and s.json()["values"]["breaker_open"] is True)
    replay = await w.command(BASE, "relay", {"values": {"breaker_command": "open"}, "token": selected["token"]})
    assert replay["error"]["code"] == "select_required"  # a token works once


async def test_mqtt5_response_topic_and_correlation_data(world: World) -> None:
    w = world.watcher
    await w.topic(f"{BASE}/lamps/availability")
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "operator/console-7/replies"
    props.CorrelationData = b"\x01\x02corr"
    since = len(w.seen)
    await w.send(f"{BASE}/lamps/set", {"transaction": "mq5", "values": {"ballast_0_arc_power": 10}}, properties=props)
    reply = await w.topic("operator/console-7/replies", since=since)
    assert reply.json()["transaction"] == "mq5" and reply.json()["status"] == "ok"
    assert reply.properties.CorrelationData == b"\x01\x02corr"
    assert not [s for s in w.seen[since:] if s.topic == f"{BASE}/lamps/set/result"]  # exactly one answer


@pytest.mark.long
async def test_fuzzed_commands_are_all_answered(world: World) -> None:
    w = world.watcher
    await w.topic(f"{BASE}/lamps/availability")
    rng = random.Random(7)
    cases: list[tuple[str, bytes, str]] = []
    for i in range(1000):
        t = f"f{i}"
        kind = i % 10
        device = "lamps"
        if kind == 0:
            body, code = b"{not json" + bytes(rng.randrange(256) for _ in range(rng.randrange(20))), "bad_json"
        elif kind == 1:
            body, code = json.dumps([1, 2, t]).encode(), "bad_json"
        elif kind == 2:
            body, code = (
                json.dumps({"transaction": t, "values": {"ballast_1_arc_power": "x" * rng.randrange(1, 50)}}).encode(),
                "bad_type",
            )
        elif kind == 3:
            body, code = (
                json.dumps({"transaction": t, "values": {"ballast_1_arc_power": rng.choice([101, -1, 1e9])}}).encode(),
                "out_of_range",
            )
        elif kind == 4:
            body, code = json.dumps({"transaction": t, "values": {f"nope_{i}": 1}}).encode(), "unknown_point"
        elif kind == 5:
            body, code = json.dumps({"transaction": t, "values": {"ballast_1_level": 5}}).encode(), "read_only"
        elif kind == 6:
            body, code = json.dumps({"transaction": t, "values": {"x": "y" * 70000}}).encode(), "payload_too_large"
        elif kind == 7:
            device, body, code = "ghost", json.dumps({"transaction": t, "values": {"a": 1}}).encode(), "unknown_device"
        elif kind == 8:
            body, code = (
                json.dumps({"transaction": "replayed", "values": {"ballast_2_arc_power": 50}}).encode(),
                "duplicate_transaction",
            )
        else:
            body, code = (
                json.dumps({"transaction": t, "values": {"ballast_1_arc_power": True}, "extra": 1}).encode(),
                "bad_json",
            )
        cases.append((device, body, code))
    first_replay = await w.command(BASE, "lamps", {"transaction": "replayed", "values": {"ballast_2_arc_power": 50}})
    assert first_replay["status"] == "ok"
    since = len(w.seen)
    for device, body, _ in cases:
        await w.send(f"{BASE}/{device}/set", body)
    expected = len(cases)
    await w.wait_for(
        lambda s: len([x for x in w.seen[since:] if x.topic.endswith("/set/result")]) >= expected,
        timeout=60,
        since=since,
        what="1000 results",
    )
    results = [s.json() for s in w.seen[since:] if s.topic.endswith("/set/result")]
    assert len(results) == expected
    codes: dict[str, int] = {}
    for r in results:
        assert r["status"] == "error"
        codes[r["error"]["code"]] = codes.get(r["error"]["code"], 0) + 1
    want: dict[str, int] = {}
    for _, _, code in cases:
        want[code] = want.get(code, 0) + 1
    assert codes == want
    by_transaction = {
        r["transaction"]: r["error"]["code"] for r in results if r["transaction"] and r["transaction"] != "replayed"
    }
    for i, (_, _, code) in enumerate(cases):
        if f"f{i}" in by_transaction:
            assert by_transaction[f"f{i}"] == code
    # and polling never stopped
    count = len(w.on(f"{BASE}/meter/state"))
    await w.wait_for(lambda s: s.topic == f"{BASE}/meter/state", since=len(w.seen))
    assert len(w.on(f"{BASE}/meter/state")) > count
    assert world.gateway.engine.device_states()["online"] == 4


async def test_device_offline_and_back(world: World) -> None:
    w = world.watcher
    await w.topic(f"{BASE}/level/availability")
    since = len(w.seen)
    world.site.set_fault("level", {"timeout": True})
    offline = await w.wait_for(
        lambda s: s.topic == f"{BASE}/level/availability" and s.payload == b"offline", since=since, timeout=15
    )
    health = await w.wait_for(
        lambda s: s.topic == f"{BASE}/level/health" and s.json()["state"] == "offline", since=since
    )
    assert health.json()["reason"] == "timeout"
    state = await w.wait_for(lambda s: s.topic == f"{BASE}/level/state" and "errors" in s.json(), since=since)
    assert state.json()["values"] == {} and set(state.json()["errors"].values()) == {"timeout"}
    event = await w.wait_for(lambda s: s.topic == f"{BASE}/event" and s.json()["kind"] == "device_offline", since=since)
    assert event.json()["device"] == "level"
    command = await w.command(BASE, "level", {"values": {"mode": "logging"}})
    assert command["error"]["code"] == "device_offline"
    world.site.clear_faults("level")
    await w.wait_for(
        lambda s: s.topic == f"{BASE}/level/availability" and s.payload == b"online",
        since=w.seen.index(offline),
        timeout=15,
    )


async def test_requests(world: World) -> None:
    w = world.watcher
    await w.topic(f"{BASE}/meter/availability")
    read = await w.request(BASE, "read", {"device": "meter", "point": "frequency"})
    assert read["status"] == "ok" and 49 < read["data"]["value"] < 51
    assert (await w.request(BASE, "read", {"device": "meter", "point": "nope"}))["error"]["code"] == "unknown_point"
    devices = await w.request(BASE, "devices")
    assert {d["id"] for d in devices["data"]} == {"lamps", "meter", "relay", "level"}
    health = await w.request(BASE, "health")
    assert health["data"]["devices"]["online"] == 4
    unknown = await w.request(BASE, "explode")
    assert unknown["error"]["code"] == "unknown_action"


async def test_reload_restarts_only_what_changed_and_refuses_bad_files(world: World) -> None:
    w = world.watcher
    await w.topic(f"{BASE}/meter/availability")
    meter = world.gateway.engine.devices["meter"]
    data = yaml.safe_load(world.path.read_text())
    data["devices"] = [d for d in data["devices"] if d["id"] != "level"]
    next(d for d in data["devices"] if d["id"] == "relay")["poll"] = 0.7
    world.path.write_text(yaml.safe_dump(data))
    result = await w.request(BASE, "reload")
    assert result["status"] == "ok"
    assert result["data"]["devices_removed"] == ["level"] and result["data"]["devices_restarted"] == ["relay"]
    assert world.gateway.engine.devices["meter"] is meter  # untouched
    devices = await w.wait_for(lambda s: s.topic == f"{BASE}/devices" and len(s.json()) == 3)
    assert "level" not in {d["id"] for d in devices.json()}
    world.path.write_text(world.path.read_text().replace("profile: eastron-sdm630", "profile: sdm630"))
    refused = await w.request(BASE, "reload")
    assert refused["error"]["code"] == "invalid_config"
    assert any("unknown profile 'sdm630'" in p for p in refused["error"]["details"])
    assert world.gateway.engine.devices["meter"] is meter  # nothing was torn down


async def test_broker_restarts_five_times(world: World) -> None:
    w = world.watcher
    await w.topic(f"{BASE}/meter/availability")
    for round_ in range(5):
        await asyncio.to_thread(world.broker.restart, 0.3)  # the gateway sees the broker go, as in the field
        since = len(w.seen)
        birth = await w.wait_for(
            lambda s: s.topic == f"{BASE}/status" and s.json()["state"] == "online",
            since=since,
            timeout=20,
            what=f"birth after restart {round_}",
        )
        assert birth
        await w.wait_for(lambda s: s.topic == f"{BASE}/devices", since=since, timeout=10)
        await w.wait_for(lambda s: s.topic == f"{BASE}/meter/availability", since=since, timeout=10)
    result = await w.command(BASE, "lamps", {"values": {"ballast_3_arc_power": 60}}, timeout=15)
    assert result["status"] == "ok"
    assert world.gateway.mqtt.stats.connects >= 6
