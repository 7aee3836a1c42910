"""A node's config.json: from an inventory file (many nodes, shared defaults) or from options; secrets from
the environment or a no-echo prompt; written atomically on the board and read back.

Secrets never sit in the inventory (`password_env` names an environment variable instead) and
never appear in output or logs: summaries say "password set".
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError, model_validator

from gateway.common.problems import ConfigError, format_path
from gateway.common.types import Duration, Identifier, Seconds, Strict
from gateway.common.validate import explain, validate
from gateway.common.yamlsource import YamlSource, load_yaml
from gateway.technician import NodeToolError
from gateway.technician.serial_board import NODE_STATE, Board, mask_secrets

EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="an environment variable's name")]
Pin = Annotated[int, Field(ge=0, le=48)]
# Whole seconds on the node (its timers count seconds), written as in the gateway's configuration: 30, 30s, 5m.
WholeSeconds = Annotated[Duration, AfterValidator(round)]


class BadSettings(NodeToolError):
    """Settings given as options that the rules refuse (the command line reports these as usage errors)."""


class Wifi(Strict):
    ssid: str | None = Field(None, min_length=1, max_length=32, description="the WiFi network's name")
    password_env: EnvName | None = Field(
        None, description="environment variable with the WiFi password; asked for (no echo) when not set"
    )
    open: bool = Field(False, description="an open network without password")


class Broker(Strict):
    host: str | None = Field(None, min_length=1, description="the broker's address as the node sees it")
    port: int = Field(1883, ge=1, le=65535)
    user: str | None = Field(None, min_length=1, description="broker user; '{id}' is replaced by the node id")
    password_env: EnvName | None = Field(
        None, description="environment variable with the broker password (asked for when a user is set)"
    )
    keepalive: int = Field(30, ge=5, le=600)


class I2cSensor(Strict):
    type: Literal["bh1750", "bme280"]
    sda: Pin = 21
    scl: Pin = 22
    address: int | None = Field(None, ge=0x08, le=0x77)


class PirSensor(Strict):
    type: Literal["pir"]
    pin: Pin


class UltrasonicSensor(Strict):
    type: Literal["jsn-sr04t"]
    trigger: Pin
    echo: Pin
    mount_height: float = Field(3.0, gt=0, le=20)


class BatterySensor(Strict):
    type: Literal["battery"]
    pin: Pin
    divider: float = Field(2.0, gt=0, le=20)


Sensor = Annotated[I2cSensor | PirSensor | UltrasonicSensor | BatterySensor, Field(discriminator="type")]
_SENSOR: TypeAdapter[Any] = TypeAdapter(Sensor)
_SENSOR_MODELS: dict[str, type[Strict]] = {
    kind: model
    for model in (I2cSensor, PirSensor, UltrasonicSensor, BatterySensor)
    for kind in get_args(model.model_fields["type"].annotation)
}
SENSOR_TYPES = tuple(_SENSOR_MODELS)


def sensor_problem(sensor: dict[str, Any]) -> str | None:
    """What is wrong with one sensor's settings, in plain words, or None."""
    try:
        _SENSOR.validate_python(sensor)
    except ValidationError as exc:
        said = []
        model = _SENSOR_MODELS[sensor["type"]]
        for error in sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden"):  # a typo explains a gap
            error["loc"] = tuple(p for p in error["loc"] if p != sensor["type"])
            where = format_path(error["loc"])
            said.append(f"{where}: {explain(error, model)}" if where else explain(error, model))
        return "; ".join(said)
    return None


class NodeSettings(Strict):
    wifi: Wifi | None = None
    broker: Broker | None = None
    topic: Identifier | None = Field(None, description="topic prefix the node publishes under (default nodes)")
    interval: Annotated[WholeSeconds, Seconds(5, 3600)] | None = Field(
        None, description="time between readings: seconds, or 30s, 5m"
    )
    health_interval: Annotated[WholeSeconds, Seconds(10, 3600)] | None = Field(
        None, description="time between health reports: seconds, or 60s, 10m"
    )
    sensors: list[Sensor] | None = None
    deep_sleep: bool | None = None
    ntp: str | None = None
    buffer_slots: int | None = Field(None, ge=16, le=4096, description="readings kept on flash while offline")


class NodeEntry(NodeSettings):
    id: Identifier


class Inventory(Strict):
    defaults: NodeSettings = Field(default_factory=NodeSettings, description="settings every node shares")
    nodes: list[NodeEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Inventory:
        seen: set[str] = set()
        for node in self.nodes:
            if node.id in seen:
                raise ValueError(f"node {node.id} is listed twice")
            seen.add(node.id)
        return self


def load_inventory(path: Path) -> tuple[Inventory, YamlSource]:
    source = load_yaml(path)
    return validate(source, Inventory), source


def node_settings(inventory: Inventory, source: YamlSource | None, node_id: str) -> dict[str, Any]:
    """The node's settings: defaults, then its own entry on top (wifi and broker merged key by key)."""
    for index, entry in enumerate(inventory.nodes):
        if entry.id == node_id:
            merged = _merge(inventory.defaults.model_dump(exclude_none=True, exclude_unset=True),
                            entry.model_dump(exclude_none=True, exclude_unset=True))  # fmt: skip
            _require(merged, source, ("nodes", index))
            return merged
    known = ", ".join(n.id for n in inventory.nodes[:20])
    raise NodeToolError(f"Node {node_id} is not in the inventory. It lists: {known}")


def settings_from_options(values: dict[str, Any]) -> dict[str, Any]:
    """Settings from command-line options, checked by the same rules as the inventory."""
    try:
        entry = NodeEntry.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BadSettings(f"{format_path(tuple(first['loc']))}: {explain(first, NodeEntry)}") from None
    merged = entry.model_dump(exclude_none=True, exclude_unset=True)
    _require(merged, None, ())
    return merged


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _require(settings: dict[str, Any], source: YamlSource | None, where: tuple[Any, ...]) -> None:
    missing = [
        name
        for name, present in (
            ("wifi.ssid", settings.get("wifi", {}).get("ssid")),
            ("broker.host", settings.get("broker", {}).get("host")),
        )
        if not present
    ]
    if not missing:
        return
    text = f"node {settings['id']}: {' and '.join(missing)} missing (give it here or under defaults)"
    if source is not None:
        raise ConfigError([source.problem(source.resolve(where), text)])
    raise BadSettings(text.replace("here or under defaults", "with --wifi-ssid / --broker"))


# -- secrets ------------------------------------------------------------------------------------------

Prompt = Callable[[str], str]


def ask_secret(label: str) -> str:
    if not sys.stdin.isatty():
        raise EOFError
    return getpass.getpass(f"{label}: ")


def secret(label: str, env: str | None, prompt: Prompt) -> str:
    """The value of the environment variable `env`, else typed at a no-echo prompt; never shown anywhere."""
    if env:
        value = os.environ.get(env)
        if value:
            return value
    try:
        value = prompt(label)
    except EOFError:
        where = f"set the environment variable {env}" if env else "name an environment variable with password_env"
        raise NodeToolError(f"{label} is needed: {where}, or run this in a terminal to be asked for it.") from None
    if not value:
        raise NodeToolError(f"{label}: nothing was typed.")
    return value


def node_config(settings: dict[str, Any], prompt: Prompt = ask_secret) -> dict[str, Any]:
    """The config.json the firmware reads (firmware/config.py), with the secrets filled in."""
    node_id = settings["id"]
    wifi = settings["wifi"]
    broker = settings["broker"]
    wifi_password = (
        "" if wifi.get("open") else secret(f"WiFi password for {wifi['ssid']}", wifi.get("password_env"), prompt)
    )
    user = broker.get("user")
    user = user.replace("{id}", node_id) if user else None
    broker_password = secret(f"Broker password for {user}", broker.get("password_env"), prompt) if user else None
    config: dict[str, Any] = {
        "id": node_id,
        "wifi": {"ssid": wifi["ssid"], "password": wifi_password},
        "broker": {
            "host": broker["host"],
            "port": broker.get("port", 1883),
            "user": user,
            "password": broker_password,
            "keepalive": broker.get("keepalive", 30),
        },
    }
    for key in ("topic", "interval", "health_interval", "deep_sleep", "ntp", "buffer_slots"):
        if key in settings:
            config[key] = settings[key]
    config["sensors"] = [{k: v for k, v in s.items() if v is not None} for s in settings.get("sensors", [])]
    return config


def summary(config: dict[str, Any]) -> list[str]:
    """What was provisioned, for the screen: secrets only as 'set'."""
    wifi, broker = config["wifi"], config["broker"]
    as_user = f" as {broker['user']} (password set)" if broker.get("user") else " (no login)"
    sensors = ", ".join(s["type"] for s in config["sensors"]) or "none"
    return [
        f"  WiFi      {wifi['ssid']} ({'password set' if wifi['password'] else 'open network'})",
        f"  broker    {broker['host']}:{broker['port']}{as_user}",
        f"  topic     {config.get('topic', 'nodes')}/{config['id']}",
        f"  sensors   {sensors}",
        f"  interval  {config.get('interval', 60)} s readings, health every {config.get('health_interval', 60)} s",
    ]


# -- on the board ---------------------------------------------------------------------------------------


def check_owner(board: Board, node_id: str, *, reassign: bool = False) -> str | None:
    """The node id the board is provisioned as (None: none); NodeToolError if another, unless reassigning.
    Setup asks before it deploys anything, so another node's board is never changed by mistake."""
    previous = board.read_config()
    before = previous.get("id") if isinstance(previous, dict) else None
    if before and before != node_id and not reassign:
        raise NodeToolError(
            f"This board is provisioned as {before}, not {node_id}; nothing was changed on it.\n"
            f"To reuse it as {node_id}, run again with --reassign: readings it still holds for {before} "
            "are then discarded."
        )
    return before if isinstance(before, str) else None


def provision(board: Board, config: dict[str, Any], *, reassign: bool = False) -> str | None:
    """Write config.json atomically and verify it; returns the id the board had before, if another.

    The check reads the file back through the board's own JSON parser; passwords come back only as
    their SHA-256, so secrets go to the board and never back over the cable."""
    before = check_owner(board, config["id"], reassign=reassign)
    if before and before != config["id"]:
        board.remove(list(NODE_STATE))
    data = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
    board.write("config.json.new", data)
    staged = board.hashes(["config.json.new"])["config.json.new"]
    if staged != hashlib.sha256(data).hexdigest():
        board.remove(["config.json.new"])
        raise NodeToolError("The board's copy of config.json does not match what was sent; nothing was changed.")
    board.rename("config.json.new", "config.json")
    if board.read_config() != mask_secrets(config):
        raise NodeToolError("config.json on the board does not read back as written. Run provision again.")
    return before if before != config["id"] else None
