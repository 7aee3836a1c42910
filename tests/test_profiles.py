"""Shipped profiles, profile expansion (defaults, repeat blocks, parameters) and the JSON Schemas."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from gateway.common.problems import ConfigError
from gateway.config.schema import json_schema
from gateway.points.types import DataType
from gateway.profiles.expand import expand
from gateway.profiles.model import Access, Profile
from gateway.profiles.registry import SHIPPED_DIR, ProfileRegistry, load_profile
from gateway.south.modbus.codec import ByteOrder
from gateway.south.modbus.profile import Table, place
from gateway.south.nodes.profile import NodeKey

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = [
    "eastron-sdm630",
    "eastron-sdm120",
    "dali-modbus-gateway",
    "water-level-logger",
    "magflow-meter",
    "feeder-protection-relay",
    "esp32-pole-sensor",
]


def _profile(name: str) -> Profile:
    return ProfileRegistry().load(name)[0]


def test_every_required_profile_is_shipped() -> None:
    assert set(REQUIRED) <= set(ProfileRegistry().names())


@pytest.mark.parametrize("path", sorted(SHIPPED_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_profile_validates_and_cites_its_source(path: Path) -> None:
    profile, _ = load_profile(path)
    assert profile.name == path.stem
    assert len(profile.source) > 20
    resolved, issues = expand(profile)
    assert issues == []
    assert resolved.points


def test_sdm630_register_map() -> None:
    points = {p.name: p for p in expand(_profile("eastron-sdm630"))[0].points}
    assert (place(points["voltage_l1"]).table, place(points["voltage_l1"]).address) == (Table.INPUT, 0x00)
    assert place(points["frequency"]).address == 0x46
    assert place(points["energy_total"]).address == 0x156
    assert place(points["power_total"]).codec is not None
    assert place(points["power_total"]).codec.byte_order is ByteOrder.ABCD
    assert points["power_total"].dtype is DataType.FLOAT32
    assert points["energy_import"].state_class == "total_increasing"
    assert _profile("eastron-sdm630").limits.max_registers == 80


def test_magflow_is_low_word_first() -> None:
    points = {p.name: p for p in expand(_profile("magflow-meter"))[0].points}
    flow = place(points["flow"]).codec
    assert flow is not None and flow.byte_order is ByteOrder.CDAB
    assert (place(points["total_forward"]).address, place(points["total_forward"]).registers) == (604, 4)
    # 0.042 m3/s as float32 0x3D2C0831, sent low word first
    assert flow.decode_registers([0x0831, 0x3D2C]) == 0.042


def test_relay_breaker_command_needs_select_before_operate() -> None:
    command = expand(_profile("feeder-protection-relay"))[0].point("breaker_command")
    assert command is not None
    assert command.sbo and command.access is Access.W and place(command).address == 0x1F0
    assert (
        place(command).codec is not None
        and place(command).codec.encode("open") == [1]
        and place(command).codec.encode("close") == [2]
    )


def test_dali_repetition_follows_line_and_short_address() -> None:
    profile = _profile("dali-modbus-gateway")
    full, _ = expand(profile)
    assert len([p for p in full.points if p.name.endswith("_arc_power") and p.name.startswith("ballast_")]) == 64
    resolved, issues = expand(profile, {"line": 1, "ballasts": 16, "groups": 4})
    assert issues == []
    by_name = {p.name: p for p in resolved.points}
    assert place(by_name["ballast_3_arc_power"]).address == 7000 + 100 * 3 + 15
    assert place(by_name["ballast_15_level"]).address == 7000 + 1500 + 6
    assert "ballast_16_level" not in by_name
    assert place(by_name["group_2_arc_power"]).address == 7000 + 6400 + 40
    assert place(by_name["broadcast_arc_power"]).address == 7000 + 6800
    assert place(by_name["lamp_failures_3"]).address == 7003
    lamp_failure = by_name["ballast_0_lamp_failure"]
    assert (
        lamp_failure.dtype is DataType.BIT
        and place(lamp_failure).codec is not None
        and place(lamp_failure).codec.bit == 1
    )
    # the ballast's points stay together, in the order the profile lists them
    names = [p.name for p in resolved.points]
    assert names.index("ballast_0_arc_power") < names.index("ballast_1_status")


def test_node_profile_maps_telemetry_keys() -> None:
    points = {p.name: p for p in expand(_profile("esp32-pole-sensor"))[0].points}
    assert points["illuminance"].attributes == NodeKey("lux") and points["illuminance"].unit == "lx"
    assert expand(_profile("esp32-pole-sensor"))[0].protocol.name == "node"
    assert points["motion"].dtype is DataType.BOOL
    assert points["motion"].state_class is None  # an explicit null clears the default
    assert points["report_interval"].access is Access.RW


def test_one_based_addressing_and_overrides(tmp_path: Path) -> None:
    text = """
name: vendor
manufacturer: V
model: M
description: d
source: vendor manual p. 12
limits: {addressing: 1}
defaults: {table: holding, type: int16, access: r}
points:
  temp: {address: 1, scale: 0.1, unit: C}
  setpoint: {address: 2, access: rw, min: 0, max: 50}
"""
    path = tmp_path / "vendor.yaml"
    path.write_text(text)
    profile, _ = load_profile(path)
    resolved, issues = expand(profile, overrides={"temp": {"scale": 0.01}, "setpoint": {"max": 40}})
    assert issues == []
    temp, setpoint = resolved.points
    assert place(temp).address == 0 and place(setpoint).address == 1  # wire addresses are 0-based
    assert place(temp).codec is not None and place(temp).codec.decode_registers([2345]) == 23.45
    assert setpoint.max == 40


def _as_json(data: object) -> object:
    return json.loads(json.dumps(data))  # YAML int keys become strings, as editors see them


@pytest.mark.parametrize("kind", ["profile", "config"])
def test_schema_is_valid_json_schema_and_matches_docs(kind: str) -> None:
    schema = json_schema(kind)
    jsonschema.Draft202012Validator.check_schema(schema)
    committed = json.loads((ROOT / "docs" / "schema" / f"{kind}.schema.json").read_text())
    assert committed == schema, "run: scripts/schemas"


@pytest.mark.parametrize("path", sorted(SHIPPED_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_profiles_pass_the_schema(path: Path) -> None:
    jsonschema.validate(_as_json(yaml.safe_load(path.read_text())), json_schema("profile"))


def test_example_config_passes_the_schema_and_schema_catches_mistakes() -> None:
    data = yaml.safe_load((ROOT / "examples" / "cabinet-17.yaml").read_text())
    validator = jsonschema.Draft202012Validator(json_schema("config"))
    validator.validate(_as_json(data))
    data["devices"][0]["pol"] = "1s"
    data["links"][0]["parity"] = "X"
    errors = list(validator.iter_errors(_as_json(data)))
    assert len(errors) == 2


def test_a_profile_read_again_is_the_same_and_a_changed_one_is_read_anew(tmp_path: Path) -> None:
    """Loading a file with the same bytes reuses the checked profile (a reload, every gateway of a test run); any
    change to the bytes, even one that keeps the size, is read and checked again; a broken edit is refused."""
    path = tmp_path / "eastron-sdm120.yaml"
    text = (SHIPPED_DIR / "eastron-sdm120.yaml").read_text()
    path.write_text(text)
    first, _ = load_profile(path)
    assert load_profile(path)[0] is first
    assert "voltage: {address: 0x00" in text
    path.write_text(text.replace("voltage: {address: 0x00", "voltage: {address: 0x10"))  # the same size
    moved, _ = load_profile(path)
    assert moved is not first and moved.points["voltage"].address == 0x10
    path.write_text(text.replace("voltage: {address: 0x00", "voltage: {address: 0x0G"))
    with pytest.raises(ConfigError, match=r"eastron-sdm120\.yaml:"):
        load_profile(path)
    path.write_text(text)
    assert load_profile(path)[0] is first  # back as it was
