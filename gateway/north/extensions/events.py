"""`<base>/event`: alarms, command audit records and notable events, one JSON object each.

An event about one configured device is also on `<base>/<device>/event`, so whoever follows a
device (a breaker being selected and operated, say) can subscribe to it alone.
"""

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
        body = {"ts": ts, "kind": event.kind, **event.to_json()}
        self.mqtt.publish(f"{self.ctx.base}/event", body, Kind.EVENT, ts=ts)
        device = getattr(event, "device", None)
        if isinstance(device, str) and self.ctx.store.get(device) is not None:
            self.mqtt.publish(f"{self.ctx.base}/{device}/event", body, Kind.EVENT, ts=ts)
