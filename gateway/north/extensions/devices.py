"""`<base>/devices`: every device with its profile, link and point metadata (unit, type, access, limits), retained."""

from __future__ import annotations

from typing import Any

from gateway.north.extensions.base import Context, Extension
from gateway.north.message import Kind
from gateway.profiles.expand import PointSpec


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


def describe_devices(ctx: Context) -> list[dict[str, Any]]:
    loaded = ctx.loaded
    out = []
    for config in loaded.config.devices:
        resolved = loaded.devices[config.id]
        profile = resolved.profile
        out.append(
            {
                "id": config.id,
                "profile": profile.name,
                "manufacturer": profile.manufacturer,
                "model": profile.model,
                "link": config.link,
                "unit": config.unit,
                "poll_s": config.poll,
                "enabled": config.enabled,
                "points": {p.name: point_metadata(p) for p in resolved.points},
            }
        )
    return out


class DeviceList(Extension):
    def start(self) -> None:
        self.ctx.mqtt.on_connect(self.publish)

    def reloaded(self) -> None:
        self.publish()

    def publish(self) -> None:
        self.ctx.mqtt.publish(f"{self.ctx.base}/devices", describe_devices(self.ctx), Kind.CONTROL, retain=True, qos=1)
