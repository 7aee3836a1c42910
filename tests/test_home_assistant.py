"""Home Assistant discovery a household or a city would accept (field trial, operator 15).

The gateway is a device of its own with its health, every device's `via_device` points at it;
installation settings are configuration entities switched off by default, status and check words
diagnostic; a bit that failed to read is unavailable, not OFF; entity names read as words; and a
device removed while the gateway was stopped leaves nothing behind in Home Assistant.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hil.broker import MosquittoBroker
from tests import test_mqtt
from tests.mqtt_harness import Watcher, plain_config, start_gateway
from tests.test_mqtt import BASE, World

world = test_mqtt.world  # the site of four devices with Home Assistant on, as test_mqtt runs it

PREFIX = "homeassistant/device"


def _lookup(data: Any, template: str) -> Any:
    """What a `{{ value_json.a.b }}` (or `| length`) template gives for `data`."""
    found = re.fullmatch(r"\{\{ value_json((?:\.\w+)*)( \| length)? \}\}", template)
    assert found, template
    for key in filter(None, found.group(1).split(".")):
        data = data[key]
    return len(data) if found.group(2) else data


async def test_the_gateway_is_a_device_with_its_health_and_every_device_hangs_off_it(world: World) -> None:
    w = world.watcher
    gateway = (await w.topic(f"{PREFIX}/cityedge_block/config")).json()
    assert gateway["dev"]["ids"] == ["cityedge_block"] and gateway["dev"]["mf"] == "CityEdge"
    health = (await w.wait_for(lambda s: s.topic == f"{BASE}/health" and s.json()["devices"]["online"] == 4)).json()
    for key, entity in gateway["cmps"].items():
        assert entity["state_topic"] == f"{BASE}/health" and entity["entity_category"] == "diagnostic"
        value = _lookup(health, entity["value_template"])  # every template reads a field the health has
        assert isinstance(value, int | float), (key, value)
    assert _lookup(health, gateway["cmps"]["devices_online"]["value_template"]) == 4
    for device in ("lamps", "meter", "relay", "level"):
        discovery = (await w.topic(f"{PREFIX}/cityedge_block_{device}/config")).json()
        assert discovery["dev"]["via_device"] == gateway["dev"]["ids"][0]


async def test_settings_diagnostics_failed_bits_and_names(world: World) -> None:
    w = world.watcher
    level = (await w.topic(f"{PREFIX}/cityedge_block_level/config")).json()["cmps"]
    for setting in ("slave_address", "baud_rate", "parity"):  # bus settings: not for everyday use
        assert level[setting]["entity_category"] == "config" and level[setting]["enabled_by_default"] is False
    assert "entity_category" not in level["mode"] and "entity_category" not in level["temperature"]
    relay = (await w.topic(f"{PREFIX}/cityedge_block_relay/config")).json()["cmps"]
    assert relay["check_word"]["entity_category"] == "diagnostic"
    assert relay["current_l1"]["name"] == "Current l1"
    lamps = (await w.topic(f"{PREFIX}/cityedge_block_lamps/config")).json()["cmps"]
    failure = lamps["ballast_1_lamp_failure"]
    assert failure["p"] == "binary_sensor" and failure["availability_mode"] == "all"
    per_bit = failure["availability"][-1]
    assert per_bit["topic"] == f"{BASE}/lamps/state"
    template = per_bit["value_template"]
    assert "ballast_1_lamp_failure" in template and "errors" in template and "'offline'" in template


async def test_dali_lamps_and_groups_are_lights_with_brightness(world: World) -> None:
    w = world.watcher
    lamps = (await w.topic(f"{PREFIX}/cityedge_block_lamps/config")).json()["cmps"]
    ballast, group = lamps["ballast_1_arc_power"], lamps["group_1_arc_power"]
    assert (ballast["p"], ballast["brightness_scale"], ballast["on_command_type"]) == ("light", 100, "brightness")
    assert ballast["state_topic"] == f"{BASE}/lamps/state" and "ballast_1_arc_power" in ballast["state_value_template"]
    assert group["p"] == "light" and group["optimistic"] is True  # written, never read back
    # What Home Assistant sends for "brightness 40" and for "off" reaches the lamp through the command service.
    brightness = ballast["brightness_command_template"].replace("{{ value }}", "40")
    await w.send(ballast["brightness_command_topic"], brightness)
    await w.wait_for(lambda s: s.topic == f"{BASE}/lamps/state" and s.json()["values"]["ballast_1_level"] == 40)
    await w.send(ballast["command_topic"], ballast["payload_off"])
    await w.wait_for(lambda s: s.topic == f"{BASE}/lamps/state" and s.json()["values"]["ballast_1_level"] == 0)


async def test_a_device_removed_while_the_gateway_was_stopped_leaves_nothing_behind(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    path = plain_config(tmp_path / "gw.yaml", mosquitto, nodes=[{"id": "pole-1"}, {"id": "pole-2"}],
                        homeassistant={"enabled": True})  # fmt: skip
    watcher = Watcher(mosquitto, ("cityedge/#", "homeassistant/#", "nodes/#"))
    await watcher.start()
    try:
        await watcher.send("nodes/pole-2/status", b"online", retain=True)
        gateway = await start_gateway(path)
        await watcher.wait_for(lambda s: s.topic == f"{PREFIX}/cityedge_hard_pole-2/config" and bool(s.payload))
        await watcher.wait_for(lambda s: s.topic == "cityedge/hard/pole-2/availability" and s.payload == b"online")
        await gateway.stop()
        path.write_text(path.read_text().replace("- id: pole-2\n", ""))
        since = len(watcher.seen)
        gateway = await start_gateway(path)
        try:
            for topic in (f"{PREFIX}/cityedge_hard_pole-2/config", "cityedge/hard/pole-2/availability",
                          "cityedge/hard/pole-2/health"):  # fmt: skip
                cleared = await watcher.wait_for(lambda s, t=topic: s.topic == t and s.payload == b"", since=since)
                assert cleared.retain or cleared.payload == b""
            await watcher.wait_for(  # and the one still configured announced again, in its own time
                lambda s: s.topic == f"{PREFIX}/cityedge_hard_pole-1/config" and bool(s.payload), since=since
            )
        finally:
            await gateway.stop()
    finally:
        await watcher.stop()
    late = Watcher(mosquitto, (f"{PREFIX}/#",))
    await late.start()
    try:
        await late.topic(f"{PREFIX}/cityedge_hard_pole-1/config")
        assert not late.on(f"{PREFIX}/cityedge_hard_pole-2/config")  # gone from the broker for good
    finally:
        await late.stop()


async def test_hostile_announcements_in_our_name_are_counted_and_left_alone(world: World) -> None:
    """Anyone may write under homeassistant/device/: garbage in our name never crashes, never clears anything."""
    w = world.watcher
    await w.topic(f"{PREFIX}/cityedge_block/config")
    hostile = {
        "deep": ("[" * 5000 + "]" * 5000).encode(),
        "huge": b'{"state_topic": "' + b"x" * 300_000 + b'"}',
        "bytes": b"\xff\xfe\x00garbage",
        "nan": b'{"state_topic": NaN}',
        "list": b"[1, 2, 3]",
        "elsewhere": b'{"state_topic": "cityedge/other/meter/state"}',
    }
    for name, payload in hostile.items():
        await w.send(f"{PREFIX}/cityedge_block_{name}/config", payload, retain=True)
    health = await w.wait_for(
        lambda s: (
            s.topic == f"{BASE}/health"
            and sum(v for k, v in s.json()["dropped_inputs"].items() if k.startswith("homeassistant_")) >= 6
        ),
        timeout=15,
    )
    dropped = health.json()["dropped_inputs"]
    assert dropped["homeassistant_bad_json"] >= 2 and dropped["homeassistant_payload_too_large"] >= 1
    assert dropped["homeassistant_bad_announcement"] >= 3
    for name in hostile:  # not ours to read, so not ours to clear
        assert not [s for s in w.seen if s.topic == f"{PREFIX}/cityedge_block_{name}/config" and s.payload == b""]
    for name in hostile:
        await w.send(f"{PREFIX}/cityedge_block_{name}/config", b"", retain=True)
    ok = await w.command(BASE, "lamps", {"values": {"ballast_1_arc_power": 20}})
    assert ok["status"] == "ok"  # the gateway goes on
