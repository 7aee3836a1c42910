"""Device state: `<base>/<device>/state` with every value of the cycle and the points that failed."""

from __future__ import annotations

from gateway.core.events import DeviceUpdate
from gateway.north.extensions.base import Extension
from gateway.north.message import Kind


class StatePublisher(Extension):
    def start(self) -> None:
        self.subscribe(DeviceUpdate, self.on_update)

    def on_update(self, update: DeviceUpdate) -> None:
        payload: dict[str, object] = {"ts": update.ts, "values": update.values}
        if update.seq is not None:
            payload["seq"] = update.seq
        if update.errors:
            payload["errors"] = update.errors
        mqtt = self.mqtt
        mqtt.publish(
            f"{self.ctx.base}/{update.device}/state",
            payload,
            Kind.TELEMETRY,
            retain=mqtt.settings.retain_state,
            ts=update.ts,
        )
