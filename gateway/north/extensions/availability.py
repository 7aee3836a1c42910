"""Per device: `<base>/<device>/availability` (online/offline) and `<base>/<device>/health` (JSON), retained.

Published on every change, every health interval, and again after each reconnect.
Degraded devices are available: they answer, with some errors.
"""

from __future__ import annotations

from gateway.core.events import DeviceOffline, DeviceOnline, HealthChanged
from gateway.north.extensions.base import Extension
from gateway.north.message import Kind


class Availability(Extension):
    def start(self) -> None:
        self.ctx.bus.subscribe(HealthChanged, self.on_change)
        self.ctx.mqtt.on_connect(self.publish_all)
        self.every_health_interval(self._periodic)

    def on_change(self, event: HealthChanged) -> None:
        self._publish(event.device, event.state, dict(event.health))
        if event.previous is not None and (event.state == "offline") != (event.previous == "offline"):
            offline = event.state == "offline"
            self.ctx.bus.publish(DeviceOffline(event.device, event.reason) if offline else DeviceOnline(event.device))

    def _publish(self, device: str, state: str, health: dict[str, object]) -> None:
        base, mqtt = self.ctx.base, self.ctx.mqtt
        mqtt.publish(
            f"{base}/{device}/availability",
            b"offline" if state == "offline" else b"online",
            Kind.CONTROL,
            retain=True,
            qos=1,
        )
        mqtt.publish(f"{base}/{device}/health", health, Kind.CONTROL, retain=True, qos=1)

    def publish_all(self) -> None:
        for device in self.ctx.engine.devices.values():
            if device.health.known:
                self._publish(device.id, device.health.state.value, device.health.to_json())

    def _periodic(self) -> None:
        if self.ctx.mqtt.connected.is_set():
            self.publish_all()
