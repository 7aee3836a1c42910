"""Home Assistant MQTT discovery, device-based: `homeassistant/device/<id>/config`, one message per device.

Entities come from the profile's hints: sensors (with device and state class and
unit), binary sensors for status bits, numbers for writable analog points, selects
for writable enums, switches for writable booleans. Controls behind
select-before-operate are not offered: Home Assistant cannot do the two steps.
Availability is the gateway's status and the device's availability, both required.
Re-sent when Home Assistant announces itself on `<prefix>/status`.
"""

from __future__ import annotations

import re
from typing import Any

import aiomqtt

from gateway import __version__
from gateway.core.inputs import InputError, parse_json
from gateway.north.extensions.base import Extension
from gateway.north.message import Kind
from gateway.points.classes import BINARY_CLASSES
from gateway.points.types import INTEGER_TYPES, DataType
from gateway.profiles.expand import PointSpec, ResolvedProfile


def _object_id(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", "_".join(("cityedge", *parts)))


def _value(name: str) -> str:
    return "{{ value_json['values'].get('%s') }}" % name


def readable_name(name: str) -> str:
    """`ballast_3_arc_power` as a person writes it: `Ballast 3 arc power`."""
    words = name.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def component(p: PointSpec, set_topic: str, base: str = "", device_id: str = "") -> dict[str, Any] | None:
    """The discovery entry of one point, or None when it is not offered."""
    if p.sbo:
        return None
    entry: dict[str, Any] = {"name": readable_name(p.name)}
    if p.category == "config":  # an installation setting: in the device's settings, switched off until wanted
        entry.update(entity_category="config", enabled_by_default=False)
    elif p.category == "diagnostic":
        entry["entity_category"] = "diagnostic"
    for key, ha_key in (
        ("unit", "unit_of_measurement"),
        ("device_class", "device_class"),
        ("state_class", "state_class"),
    ):
        value = getattr(p, key)
        if value is not None:
            entry[ha_key] = value
    boolean = p.dtype in (DataType.BOOL, DataType.BIT)
    if p.entity == "light" and p.access.writable and p.max is not None:
        return _light(entry, p, set_topic, base, device_id)
    if p.access.writable:
        entry["command_topic"] = set_topic
        if boolean:
            entry.update(
                p="switch",
                payload_on='{"values": {"%s": true}}' % p.name,
                payload_off='{"values": {"%s": false}}' % p.name,
                state_on="True",
                state_off="False",
            )
        elif p.dtype is DataType.ENUM and p.enum:
            entry.update(
                p="select", options=list(p.enum.values()), command_template='{"values": {"%s": "{{ value }}"}}' % p.name
            )
        elif p.dtype is DataType.STRING:
            entry.update(p="text", command_template='{"values": {"%s": "{{ value }}"}}' % p.name)
        else:
            entry.update(
                p="number",
                command_template='{"values": {"%s": {{ value }}}}' % p.name,
                mode="box",
                step=1 if p.dtype in INTEGER_TYPES and p.scale in (None, 1) else 0.01,
            )
            entry.pop("state_class", None)
            if p.min is not None:
                entry["min"] = p.min
            if p.max is not None:
                entry["max"] = p.max
        if not p.access.readable:
            entry["optimistic"] = True
        else:
            entry["value_template"] = _value(p.name)
        if entry["p"] in ("select", "text"):
            entry.pop("device_class", None)
        return entry
    if boolean:
        entry.update(
            p="binary_sensor", value_template="{{ 'ON' if value_json['values'].get('%s') else 'OFF' }}" % p.name
        )
        if entry.get("device_class") not in BINARY_CLASSES:
            entry.pop("device_class", None)
        if base:  # a bit that failed to read is unavailable, not OFF (OFF would say "no fault" about a fault bit)
            entry["availability"] = [
                *_device_availability(base, device_id),
                {
                    "topic": f"{base}/{device_id}/state",
                    "value_template": "{{ 'offline' if '%s' in (value_json.errors or {}) else 'online' }}" % p.name,
                },
            ]
            entry["availability_mode"] = "all"
        return entry
    entry.update(p="sensor", value_template=_value(p.name))
    if p.dtype is DataType.ENUM and p.enum:
        entry.update(device_class="enum", options=list(p.enum.values()))
        entry.pop("state_class", None)
    return entry


def _light(entry: dict[str, Any], p: PointSpec, set_topic: str, base: str, device_id: str) -> dict[str, Any]:
    """A dimmable lamp level as a light with brightness: on is full level, off is 0, brightness in 0..max."""
    full = int(p.max) if p.max is not None else 100
    level = '{"values": {"%s": %%s}}' % p.name
    entry.pop("unit_of_measurement", None)
    entry.pop("device_class", None)
    entry.pop("state_class", None)
    entry.update(
        p="light",
        command_topic=set_topic,
        payload_on=level % full,
        payload_off=level % 0,
        on_command_type="brightness",
        brightness_command_topic=set_topic,
        brightness_command_template=level % "{{ value }}",
        brightness_scale=full,
    )
    if p.access.readable and base:
        now = "value_json['values'].get('%s')" % p.name
        entry.update(
            state_topic=f"{base}/{device_id}/state",
            state_value_template="{{ 'ON' if (%s or 0) > 0 else 'OFF' }}" % now,
            brightness_state_topic=f"{base}/{device_id}/state",
            brightness_value_template="{{ %s }}" % now,
        )
    else:
        entry["optimistic"] = True  # a group or broadcast level: written, never read back
    return entry


def _device_availability(base: str, device_id: str) -> list[dict[str, str]]:
    return [
        {"topic": f"{base}/status", "value_template": "{{ value_json.state }}"},
        {"topic": f"{base}/{device_id}/availability"},
    ]


MAX_ANNOUNCEMENT = 256 * 1024  # bytes: a discovery message of ours is far smaller


class HomeAssistant(Extension):
    def start(self) -> None:
        self.sent: set[str] = set()
        settings = self.ctx.loaded.config.homeassistant
        if not settings.enabled:
            return
        self.mqtt.on_connect(self.publish)
        self.mqtt.handle(f"{settings.prefix}/status", self.on_ha_status)
        self.mqtt.handle(f"{settings.prefix}/device/+/config", self.on_announced)

    async def on_ha_status(self, message: aiomqtt.Message) -> None:
        if message.payload in (b"online", "online"):
            self.publish()

    def reloaded(self) -> None:
        if self.ctx.loaded.config.homeassistant.enabled:
            self.publish()

    def discovery(self, device_id: str, resolved: ResolvedProfile) -> dict[str, Any]:
        gateway = self.ctx.loaded.config.gateway.id
        base = self.ctx.base
        set_topic = f"{base}/{device_id}/set"
        components = {}
        for p in resolved.points:
            entry = component(p, set_topic, base, device_id)
            if entry is not None:
                entry["unique_id"] = _object_id(gateway, device_id, p.name)
                components[p.name] = entry
        profile = resolved.profile
        return {
            "dev": {
                "ids": [_object_id(gateway, device_id)],
                "name": device_id,
                "mf": profile.manufacturer,
                "mdl": profile.model,
                "via_device": _object_id(gateway),
            },
            "o": {"name": "CityEdge", "sw": __version__},
            "cmps": components,
            "state_topic": f"{base}/{device_id}/state",
            "availability": _device_availability(base, device_id),
            "availability_mode": "all",
            "qos": 1,
        }

    def gateway_discovery(self) -> dict[str, Any]:
        """The gateway itself, with its health: what every device's `via_device` points at."""
        config = self.ctx.loaded.config
        gateway, base = config.gateway.id, self.ctx.base
        health = "{{ value_json%s }}"
        sensors = {
            "uptime": (
                "Uptime",
                health % ".uptime_s",
                {"unit_of_measurement": "s", "device_class": "duration", "state_class": "total_increasing"},
            ),
            "outbox_depth": ("Outbox depth", health % ".outbox.depth", {"unit_of_measurement": "messages"}),
            "devices_online": ("Devices online", health % ".devices.online", {}),
            "devices_degraded": ("Devices degraded", health % ".devices.degraded", {}),
            "devices_offline": ("Devices offline", health % ".devices.offline", {}),
            "links": ("Links", "{{ value_json.links | length }}", {}),
            "memory": ("Memory", health % ".memory_mb", {"unit_of_measurement": "MB", "device_class": "data_size"}),
        }
        components: dict[str, Any] = {}
        for key, (name, template, extra) in sensors.items():
            components[key] = {
                "p": "sensor",
                "name": name,
                "unique_id": _object_id(gateway, "gateway", key),
                "state_topic": f"{base}/health",
                "value_template": template,
                "entity_category": "diagnostic",
                "state_class": "measurement",
                **extra,
            }
        return {
            "dev": {
                "ids": [_object_id(gateway)],
                "name": f"CityEdge gateway {gateway}" + (f" ({config.gateway.site})" if config.gateway.site else ""),
                "mf": "CityEdge",
                "mdl": "street-cabinet gateway",
                "sw": __version__,
            },
            "o": {"name": "CityEdge", "sw": __version__},
            "cmps": components,
            "availability": [{"topic": f"{base}/status", "value_template": "{{ value_json.state }}"}],
            "qos": 1,
        }

    def publish(self) -> None:
        loaded = self.ctx.loaded
        prefix = loaded.config.homeassistant.prefix
        gateway = loaded.config.gateway.id
        current = {f"{prefix}/device/{_object_id(gateway)}/config"}
        self.mqtt.publish(next(iter(current)), self.gateway_discovery(), Kind.CONTROL, retain=True, qos=1)
        for device in self.ctx.store.devices():  # polled devices and ESP32 nodes alike
            topic = f"{prefix}/device/{_object_id(gateway, device.id)}/config"
            current.add(topic)
            self.mqtt.publish(topic, self.discovery(device.id, device.resolved), Kind.CONTROL, retain=True, qos=1)
        for topic in self.sent - current:  # devices that left the configuration: remove them from HA
            self.mqtt.publish(topic, b"", Kind.CONTROL, retain=True, qos=1)
        self.sent = current

    async def on_announced(self, message: aiomqtt.Message) -> None:
        """A retained announcement on the broker: one of ours for a device that is gone (removed while the
        gateway was stopped) is cleared, with the device's retained availability and health."""
        topic = str(message.topic)
        gateway = self.ctx.loaded.config.gateway.id
        mine = _object_id(gateway) + "_"
        object_id = topic.split("/")[-2]
        if not message.payload or not object_id.startswith(mine) or topic in self.sent:
            return
        raw = message.payload if isinstance(message.payload, bytes | bytearray | str) else str(message.payload)
        base = self.ctx.base
        try:
            data = parse_json(raw, max_bytes=MAX_ANNOUNCEMENT)
        except InputError as exc:  # in our own name, but not ours to read: counted, left alone
            self.ctx.faults.reject(f"homeassistant_{exc.code}", topic, exc)
            return
        state_topic = data.get("state_topic") if isinstance(data, dict) else None
        if (
            not isinstance(state_topic, str)
            or not state_topic.startswith(base + "/")
            or not state_topic.endswith("/state")
        ):
            self.ctx.faults.reject("homeassistant_bad_announcement", topic, "no state topic of this gateway")
            return
        device_id = state_topic[len(base) + 1 : -len("/state")]
        if self.ctx.store.get(device_id) is not None:
            return  # still configured: announced again by publish()
        self.mqtt.publish(topic, b"", Kind.CONTROL, retain=True, qos=1)
        for leaf in ("availability", "health"):
            self.mqtt.publish(f"{base}/{device_id}/{leaf}", b"", Kind.CONTROL, retain=True, qos=1)
