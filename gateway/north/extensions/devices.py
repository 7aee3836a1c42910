"""`<base>/devices`: every device with its profile, where it is reached, and point metadata, retained.

Every source's devices are listed (polled devices and ESP32 nodes alike), then the
devices the configuration keeps but does not run (`enabled: false`).
"""

from __future__ import annotations

from typing import Any

from gateway.config.loader import LoadedConfig
from gateway.core.state import LiveDevice, StateStore
from gateway.north.extensions.base import Extension
from gateway.north.message import Kind
from gateway.profiles.expand import PointSpec, ResolvedProfile


def point_metadata(p: PointSpec) -> dict[str, Any]:
    meta: dict[str, Any] = {"type": p.dtype.value, "access": p.access.value}
    for key in ("unit", "min", "max", "device_class", "state_class", "description"):
        value = getattr(p, key)
        if value is not None:
            meta[key] = value
    if p.enum:
        meta["enum"] = list(p.enum.values())
    if p.bits:
        meta["bits"] = {str(k): v for k, v in p.bits.items()}
    if p.sbo:
        meta["control"] = "sbo"
    return meta


def _entry(device_id: str, resolved: ResolvedProfile, where: dict[str, Any]) -> dict[str, Any]:
    profile = resolved.profile
    return {
        "id": device_id,
        "profile": profile.name,
        "manufacturer": profile.manufacturer,
        "model": profile.model,
        **where,
        "points": {p.name: point_metadata(p) for p in resolved.points},
    }


def describe_devices(store: StateStore, loaded: LoadedConfig) -> list[dict[str, Any]]:
    live: list[LiveDevice] = list(store.devices())
    out = [_entry(d.id, d.resolved, {"source": d.source, **d.describe()}) for d in live]
    for config in loaded.config.devices:
        if not config.enabled and config.id in loaded.devices:
            where = {"source": "polled", "link": config.link, "unit": config.unit, "poll_s": config.poll}
            out.append(_entry(config.id, loaded.devices[config.id], {**where, "enabled": False}))
    return out


class DeviceList(Extension):
    def start(self) -> None:
        self.mqtt.on_connect(self.publish)

    def reloaded(self) -> None:
        self.publish()

    def publish(self) -> None:
        devices = describe_devices(self.ctx.store, self.ctx.loaded)
        self.mqtt.publish(f"{self.ctx.base}/devices", devices, Kind.CONTROL, retain=True, qos=1)
