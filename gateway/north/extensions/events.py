"""`<base>/event`: alarms, command audit records and notable events, one JSON object each."""

from __future__ import annotations

import time

from gateway.core.events import Notable
from gateway.north.extensions.base import Extension
from gateway.north.message import Kind


class EventPublisher(Extension):
    def start(self) -> None:
        self.subscribe(Notable, self.on_event)

    def on_event(self, event: Notable) -> None:
        ts = int(time.time() * 1000)
        self.mqtt.publish(
            f"{self.ctx.base}/event", {"ts": ts, "kind": event.kind, **event.to_json()}, Kind.EVENT, ts=ts
        )
