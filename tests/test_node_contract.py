"""The node contract is written down in four places; this test fails the moment they drift apart.

The firmware (MicroPython, on the node), the gateway's node profile and settings, the
technician's tools and the emulators each state part of it: the sensor types and the keys
each one reports, the settings a command may change and their ranges, the topic prefix.
The firmware is read as it ships: its config module is plain Python, its sensor drivers are
read from their source (they import `machine`, which only a board has).
"""

from __future__ import annotations

import ast
import importlib.util
import typing
from pathlib import Path
from types import ModuleType
from typing import Any, get_args

from pydantic import ValidationError

from gateway.config.model import MqttSettings
from gateway.profiles.expand import expand
from gateway.profiles.registry import ProfileRegistry
from gateway.technician import provision, watch
from hil.site.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"


def _firmware_config() -> ModuleType:
    spec = importlib.util.spec_from_file_location("node_config", FIRMWARE / "config.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _firmware_sensors() -> dict[str, tuple[str, ...]]:
    """Sensor type -> the value keys its driver reports, from firmware/sensors.py."""
    tree = ast.parse((FIRMWARE / "sensors.py").read_text())
    keys_of: dict[str, tuple[str, ...]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.Assign) and any(getattr(t, "id", "") == "keys" for t in item.targets):
                    keys_of[node.name] = tuple(ast.literal_eval(item.value))
    build = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "build")
    types: dict[str, tuple[str, ...]] = {}
    source = ast.get_source_segment((FIRMWARE / "sensors.py").read_text(), build) or ""
    for kind, cls in (
        ("bh1750", "BH1750"),
        ("bme280", "BME280"),
        ("pir", "PIR"),
        ("jsn-sr04t", "JSNSR04T"),
        ("battery", "Battery"),
    ):
        assert f'"{kind}"' in source, f"firmware/sensors.py build() no longer knows {kind}"
        types[kind] = keys_of[cls]
    return types


def _literals(annotation: Any) -> set[str]:
    out: set[str] = set()
    for arg in get_args(annotation):
        out |= _literals(arg) if get_args(arg) else ({arg} if isinstance(arg, str) else set())
    return out


def test_sensor_types_and_their_keys_agree() -> None:
    firmware = _firmware_sensors()
    technician = set()
    for model in get_args(get_args(provision.Sensor)[0]):
        technician |= _literals(typing.get_type_hints(model)["type"])
    assert len(firmware) == 5 and all(firmware.values())
    assert technician == set(firmware), "cityedge node provision offers other sensor types than the firmware has"
    assert {k: tuple(v) for k, v in watch.SENSOR_KEYS.items()} == firmware, "node setup waits for other keys"


def test_every_profile_key_is_one_the_firmware_sends_or_accepts() -> None:
    sent = {key for keys in _firmware_sensors().values() for key in keys}
    remote = _firmware_config().REMOTE
    resolved, _ = expand(ProfileRegistry().load("esp32-pole-sensor")[0])
    for p in resolved.points:
        key = p.attributes.key
        if p.access.writable:
            assert key in remote, f"{p.name}: the firmware does not let a command change '{key}'"
            _, low, high = remote[key]
            assert (p.min, p.max) == (low, high), f"{p.name}: profile {p.min}..{p.max}, firmware {low}..{high}"
        else:
            assert key in sent, f"{p.name}: no firmware sensor reports '{key}'"


def test_settings_ranges_agree_between_firmware_and_provisioning() -> None:
    def accepted(key: str, value: object) -> bool:
        try:
            provision.NodeSettings.model_validate({key: value})
        except ValidationError:
            return False
        return True

    for key, (_, low, high) in _firmware_config().REMOTE.items():
        if low is None:
            continue
        found = [accepted(key, v) for v in (low - 1, low, high, high + 1)]
        assert found == [False, True, True, False], f"provisioning and the firmware ({low}..{high}) differ on {key}"
    defaults = _firmware_config().DEFAULTS
    provisioned = {"topic", "interval", "health_interval", "deep_sleep", "ntp", "buffer_slots"}
    assert provisioned <= set(defaults), "provisioning writes settings the firmware does not read"


def test_the_topic_prefix_is_the_same_default_everywhere() -> None:
    firmware = _firmware_config().DEFAULTS["topic"]
    assert MqttSettings.model_fields["node_prefix"].default == firmware
    from gateway.cli import build_parser

    parser = build_parser()
    node = next(a for a in parser._subparsers._group_actions[0].choices["node"]._actions if a.dest == "action")  # type: ignore[union-attr]
    monitor = node.choices["monitor"]
    assert next(a.default for a in monitor._actions if a.dest == "topic") == firmware


def test_the_emulated_sites_speak_the_same_sensors() -> None:
    from hil.site.scenario import DEFAULT_NODE_SENSORS

    firmware = set(_firmware_sensors())
    assert {s["type"] for s in DEFAULT_NODE_SENSORS} <= firmware
    loaded = load_scenario(ROOT / "hil" / "scenarios" / "demo-block.yaml")
    assert loaded.scenario.nodes
    for node in loaded.scenario.nodes:
        for sensor in node.sensors:
            assert sensor["type"] in firmware, f"scenario node {node.id} has a sensor the firmware lacks: {sensor}"
