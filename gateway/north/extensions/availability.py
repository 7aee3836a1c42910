"""Per device: `<base>/<device>/availability` (online/offline) and `<base>/<device>/health` (JSON), retained.

Published on every change, every health interval, and again after each reconnect,
for every device of every source (polled devices and ESP32 nodes alike). Degraded
devices are available: they answer, with some errors.
"""

from __future__ import annotations

from typing import Any

from gateway.core.events import HealthChanged
from gateway.north.extensions.base import Extension
from gateway.north.message import Kind


class Availability(Extension):
    def start(self) -> None:
        self.subscribe(HealthChanged, self.on_change)
        self.mqtt.on_connect(self.publish_all)
        self.every_health_interval(self._periodic)

    def on_change(self, event: HealthChanged) -> None:
        self._publish(event.device, event.state, dict(event.health))

    def _publish(self, device: str, state: str, health: dict[str, Any]) -> None:
        base, mqtt = self.ctx.base, self.mqtt
        availability = b"offline" if state == "offline" else b"online"
        mqtt.publish(f"{base}/{device}/availability", availability, Kind.CONTROL, retain=True, qos=1)
        mqtt.publish(f"{base}/{device}/health", health, Kind.CONTROL, retain=True, qos=1)

    def publish_all(self) -> None:
        for device in self.ctx.store.devices():
            if device.health.known:
                self._publish(device.id, device.health.state_name, device.health.to_json())

    def _periodic(self) -> None:
        if self.mqtt.connected.is_set():
            self.publish_all()
