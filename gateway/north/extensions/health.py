"""`<base>/health`: the gateway's own health, retained, every health interval and when device counts change.

The health itself is composed in the core (the live state store); this feature only
publishes it.
"""

from __future__ import annotations

from gateway.core.events import HealthChanged
from gateway.north.extensions.base import Extension
from gateway.north.message import Kind


class GatewayHealth(Extension):
    _last_counts: dict[str, int] | None = None

    def start(self) -> None:
        self.subscribe(HealthChanged, self.on_change)
        self.mqtt.on_connect(self.publish)
        self.every_health_interval(self.publish)

    def on_change(self, _: HealthChanged) -> None:
        if self.ctx.store.counts() != self._last_counts:
            self.publish()

    def publish(self) -> None:
        self._last_counts = self.ctx.store.counts()
        health = self.ctx.store.gateway_health()
        self.mqtt.publish(f"{self.ctx.base}/health", health, Kind.CONTROL, retain=True, qos=1)
