"""`<base>/health`: the gateway's own health, retained, every health interval and when device counts change."""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.core.events import HealthChanged
from gateway.north.extensions.base import Context, Extension
from gateway.north.message import Kind


def resident_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def gateway_health(ctx: Context) -> dict[str, Any]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    queue, mqtt = ctx.mqtt.queue, ctx.mqtt
    engine = ctx.engine.health()
    return {
        "ts": int(time.time() * 1000),
        "version": __version__,
        "uptime_s": round(time.time() - ctx.started, 1),
        "memory_mb": resident_mb(),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "devices": engine["devices"],
        "links": engine["links"],
        "outbox": queue.status(),
        **{name: section() for name, section in ctx.health_sections.items()},
        "mqtt": {
            "broker": mqtt.stats.broker,
            "connects": mqtt.stats.connects,
            "failures": mqtt.stats.failures,
            "received": mqtt.stats.received,
            "takeovers": mqtt.stats.takeovers,
        },
        "dropped_inputs": ctx.faults.to_json(),
        "tasks": ctx.supervisor.to_json(),
    }


class GatewayHealth(Extension):
    _last_counts: dict[str, int] | None = None

    def start(self) -> None:
        self.ctx.bus.subscribe(HealthChanged, self.on_change)
        self.ctx.mqtt.on_connect(self.publish)
        self.every_health_interval(self.publish)

    def on_change(self, _: HealthChanged) -> None:
        if self.ctx.engine.device_states() != self._last_counts:
            self.publish()

    def publish(self) -> None:
        self._last_counts = self.ctx.engine.device_states()
        self.ctx.mqtt.publish(f"{self.ctx.base}/health", gateway_health(self.ctx), Kind.CONTROL, retain=True, qos=1)
