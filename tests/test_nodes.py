"""ESP32 nodes: the real firmware on the MicroPython unix port, a real mosquitto, the gateway's node side."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.app import Gateway
from hil.broker import MosquittoBroker
from hil.esp32.node import EXIT_DEEPSLEEP, NodeEmulator
from tests.mqtt_harness import Watcher
from tests.waiting import until

BASE = "cityedge/poles"
HW = {"i2c": {"35": {"read": "0190"}}, "pins": {"4": 1}, "adc": {"34": 40000}}  # 333.3 lx, motion, 4.03 V
SENSORS = [
    {"type": "bh1750"},
    {"type": "pir", "pin": 4},
    {"type": "battery", "pin": 34},
    {"type": "bme280"},
]  # nothing answers at the BME280's address: reported, not fatal


class World:
    def __init__(self, broker: MosquittoBroker, watcher: Watcher, gateway: Gateway, tmp: Path) -> None:
        self.broker, self.watcher, self.gateway, self.tmp = broker, watcher, gateway, tmp
        self.nodes: list[NodeEmulator] = []

    async def node(self, node_id: str = "pole-1", **config: Any) -> NodeEmulator:
        node = NodeEmulator(
            self.tmp / node_id,
            node_id,
            self.broker.host,
            self.broker.port,
            config={"sensors": SENSORS, **config},
            hardware=dict(HW),
        )
        self.nodes.append(node)
        await node.start()
        return node


@pytest.fixture
async def world(mosquitto: MosquittoBroker, tmp_path: Path) -> AsyncIterator[World]:
    config = tmp_path / "gw.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "gateway": {"id": "poles", "health_interval": 1},
                "mqtt": {"host": mosquitto.host, "port": mosquitto.port},
                "store": {"path": str(tmp_path / "outbox.db")},
                "nodes": [{"id": "pole-1", "stale_after": "20s"}, {"id": "pole-2"}],
            }
        )
    )
    watcher = Watcher(mosquitto)
    await watcher.start()
    gateway = Gateway(config)
    await gateway.start()
    w = World(mosquitto, watcher, gateway, tmp_path)
    try:
        yield w
    finally:
        for node in w.nodes:
            await node.stop()
        await gateway.stop()
        await watcher.stop()


def states(w: World, node: str = "pole-1") -> list[dict[str, Any]]:
    return [s.json() for s in w.watcher.on(f"{BASE}/{node}/state")]


async def test_node_reports_through_the_gateway(world: World) -> None:
    await world.node()
    state = (await world.watcher.topic(f"{BASE}/pole-1/state", timeout=20)).json()
    assert state["values"] == {"illuminance": 333.3, "motion": True, "motion_count": 0, "battery": 4.03}
    assert state["errors"] == {
        "temperature": "[Errno 19] ENODEV",
        "humidity": "[Errno 19] ENODEV",
        "pressure": "[Errno 19] ENODEV",
    }
    assert isinstance(state["seq"], int) and state["ts"] > 1.7e12
    assert (await world.watcher.topic(f"{BASE}/pole-1/availability")).payload == b"online"
    health = (
        await world.watcher.wait_for(lambda s: s.topic == f"{BASE}/pole-1/health" and s.json()["node"], timeout=20)
    ).json()
    assert health["state"] == "online" and health["node"]["firmware"] == "0.1.0"
    assert health["node"]["free_heap"] > 20_000  # running in a 128 KB heap, with room to spare
    info = json.loads((await world.watcher.topic("nodes/pole-1/info")).payload)
    assert info["sensors"] == ["lux", "motion", "motion_count", "vbat", "temp", "rh", "pressure"]


@pytest.mark.long
async def test_a_long_wifi_cut_loses_nothing(world: World) -> None:
    node = await world.node(interval=0.5)  # a reading every half second: thirty readings buffered in 15 s
    await until(lambda: len(states(world)) >= 2, 30, "first readings")
    node.cut_wifi()
    offline = await world.watcher.wait_for(
        lambda s: s.topic == f"{BASE}/pole-1/availability" and s.payload == b"offline", timeout=30
    )
    assert offline  # the node's Will, sent by the broker when the link died
    await asyncio.sleep(15)
    node.restore_wifi()
    back = await world.watcher.wait_for(
        lambda s: s.topic == f"{BASE}/pole-1/availability" and s.payload == b"online",
        since=world.watcher.seen.index(offline),
        timeout=60,
    )
    await asyncio.sleep(5)  # the buffered readings drain
    seqs = [s["seq"] for s in states(world)]
    assert len(seqs) > 30  # a reading every half second, through the 15 s without WiFi
    assert sorted(set(seqs)) == list(range(min(seqs), max(seqs) + 1)), "no reading may be missing"
    assert seqs == sorted(seqs), "buffered readings arrive in order"
    drained = await world.watcher.wait_for(  # readings keep coming: wait for a report with the buffer empty
        lambda s: s.topic == f"{BASE}/pole-1/health" and s.json()["node"].get("buffered") == 0,
        since=world.watcher.seen.index(back),  # reported since the node is back (not the last one from before)
        timeout=20,
    )
    assert drained.json()["node"]["mqtt_reconnects"] >= 1


async def test_remote_configuration_survives_a_reset(world: World) -> None:
    node = await world.node()
    await world.watcher.topic(f"{BASE}/pole-1/state", timeout=20)
    result = await world.watcher.command(BASE, "pole-1", {"values": {"report_interval": 7}})
    assert result["status"] == "ok" and result["values"] == {"report_interval": 7}
    assert json.loads((node.flash / "config.json").read_text())["interval"] == 7
    refused = await world.watcher.command(BASE, "pole-1", {"values": {"report_interval": 2}})
    assert refused["error"]["code"] == "out_of_range"  # the profile says 5..3600
    since = len(world.watcher.seen)
    await node.kill("power_on")  # pull the plug; it boots again
    info = await world.watcher.wait_for(lambda s: s.topic == "nodes/pole-1/info", since=since, timeout=30)
    assert info.json()["interval"] == 7


async def test_repeated_early_resets_mean_safe_mode(world: World) -> None:
    node = await world.node()
    for _ in range(3):
        since = len(world.watcher.seen)
        await world.watcher.wait_for(lambda s: s.topic == "nodes/pole-1/info", since=since, timeout=30)
        await node.kill("power_on")
    info = await world.watcher.wait_for(
        lambda s: s.topic == "nodes/pole-1/info" and s.json()["safe_mode"], since=len(world.watcher.seen), timeout=30
    )
    assert info.json()["sensors"] == []  # network and commands only
    ping = await world.watcher.command(BASE, "pole-1", {"values": {"report_interval": 30}})
    assert ping["status"] == "ok"  # commands still work in safe mode


@pytest.mark.long
async def test_deep_sleep_cycle(world: World) -> None:
    node = await world.node(deep_sleep=True, interval=30)
    node.sleep_scale = 0.05  # 30 s of sleep pass in 1.5 s
    await until(lambda: node.exits.count(EXIT_DEEPSLEEP) >= 2, 60, "two sleep cycles")
    health = [json.loads(s.payload) for s in world.watcher.on("nodes/pole-1/health")]
    assert any(h["reset_cause"] == "deep_sleep" for h in health)  # woke from deep sleep
    assert len(states(world)) >= 2  # measured and published on every wake
    await world.watcher.send("nodes/pole-1/maintenance", b"1", retain=True)
    exits = len(node.exits)
    await asyncio.sleep(6)
    assert len(node.exits) <= exits + 1  # with the maintenance flag set it stays awake
    assert node.proc is not None and node.proc.returncode is None
    await world.watcher.send("nodes/pole-1/maintenance", b"", retain=True)


async def test_a_thousand_malformed_node_messages(world: World) -> None:
    await world.watcher.topic(f"{BASE}/status")
    bad: list[bytes] = [
        b"{",
        b"[]",
        b'{"ts": "x", "values": {}}',
        b'{"ts": 1, "values": 5}',
        b"\xff\xfe",
        b'{"ts": 1, "values": {"lux": "bright"}, "seq": "one"}',
        b"x" * 9000,
        b"null",
    ]
    for i in range(1000):
        await world.watcher.send("nodes/pole-2/telemetry", bad[i % len(bad)])
    await world.watcher.send("nodes/pole-2/status", b"sideways")
    await world.watcher.send("nodes/stranger/telemetry", b'{"ts": 1, "values": {}}')
    bridge = world.gateway.nodes
    await until(lambda: bridge.garbage >= 1001, 30, "all malformed messages counted")
    event = await world.watcher.wait_for(lambda s: s.topic == f"{BASE}/event" and s.json()["kind"] == "unknown_node")
    assert event.json()["node"] == "stranger"
    health = await world.watcher.wait_for(
        lambda s: (
            s.topic == f"{BASE}/health"
            and s.json()["nodes"]["rejected_messages"] >= 1001
            and s.json()["nodes"]["unknown"]
        ),
        timeout=10,
    )
    assert health.json()["nodes"]["unknown"] == ["stranger"]
    await world.watcher.send("nodes/pole-2/telemetry", b'{"ts": 1795959231938, "seq": 1, "values": {"lux": 5.5}}')
    state = await world.watcher.topic(f"{BASE}/pole-2/state")
    assert state.json()["values"] == {"illuminance": 5.5}  # and the gateway still works


async def test_reset_causes_follow_the_esp32_port(world: World) -> None:
    """machine.reset() boots with SOFT_RESET (what MicroPython's ESP32 port reports), pulling the plug with PWRON."""
    node = await world.node()
    health = lambda: [json.loads(s.payload) for s in world.watcher.on("nodes/pole-1/health")]  # noqa: E731
    await until(lambda: bool(health()), 30, "a health report")
    assert health()[-1]["reset_cause"] == "power_on"
    since = len(world.watcher.seen)
    await world.watcher.send("nodes/pole-1/cmd", {"id": "r1", "cmd": "reboot"})
    await world.watcher.wait_for(lambda s: s.topic == "nodes/pole-1/cmd/result", since=since, timeout=15)
    await until(lambda: node.exits[-1:] == [75], 15, "machine.reset()")
    rebooted = await world.watcher.wait_for(
        lambda s: s.topic == "nodes/pole-1/health" and json.loads(s.payload)["uptime_s"] < 10,
        since=len(world.watcher.seen),
        timeout=30,
    )
    assert json.loads(rebooted.payload)["reset_cause"] == "soft"
    await node.kill()
    again = await world.watcher.wait_for(
        lambda s: s.topic == "nodes/pole-1/health" and json.loads(s.payload)["reset_cause"] == "power_on",
        since=len(world.watcher.seen),
        timeout=30,
    )
    assert json.loads(again.payload)["uptime_s"] < 10


async def test_a_node_that_has_only_said_online_is_stale_after_its_silence_not_before(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """A retained `online` at the gateway's start counts as heard then: the node is online until `stale_after` of
    silence has passed, then stale (and not stale at the first health check, as if silent since forever)."""
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump({
        "gateway": {"id": "poles", "health_interval": 1},
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port},
        "store": {"path": str(tmp_path / "outbox.db")},
        "nodes": [{"id": "pole-9", "stale_after": "3s"}],
    }))  # fmt: skip
    watcher = Watcher(mosquitto)
    await watcher.start()
    await watcher.send("nodes/pole-9/status", b"online", retain=True)
    gateway = Gateway(config)
    await gateway.start()
    try:
        topic = f"{BASE}/pole-9/availability"
        online = await watcher.wait_for(lambda s: s.topic == topic and s.payload == b"online", what="online")
        heard = asyncio.get_running_loop().time()
        stale = await watcher.wait_for(lambda s: s.topic == topic and s.payload == b"offline", timeout=20,
                                       since=watcher.seen.index(online), what="stale")  # fmt: skip
        assert asyncio.get_running_loop().time() - heard >= 2.5  # 3 s of silence, give or take a health interval
        health = await watcher.wait_for(lambda s: s.topic == f"{BASE}/pole-9/health" and s.json()["state"] == "offline")
        assert health.json()["reason"] == "stale", health.json()
        assert stale
    finally:
        await gateway.stop()
        await watcher.send("nodes/pole-9/status", b"", retain=True)
        await watcher.stop()
