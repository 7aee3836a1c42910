"""The lighting state on the CityEdge tree: `<base>/lighting/<target>`, retained, one message per change.

    {"target": "group-1", "level": 50.0, "reason": "program", "program": "night",
     "detail": "00:30 (2026-06-27T22:30:00+00:00)", "target_level": 50.0, "actual": 50.0,
     "ts": "2026-06-27T22:30:00+00:00"}

`level` is in effect, `reason` says why (program, sensor, override), `target_level` is what
the program alone says, `actual` the level read back from the device where it can be read.
Overrides are requests: `<base>/request/override` with `{"target", "level", "duration"}`
(seconds) or `"until"` (ISO 8601 with offset), or `{"target", "clear": true}`.
"""

from __future__ import annotations

from gateway.edge.lighting.controller import LightingChanged
from gateway.north.extensions.base import Extension
from gateway.north.message import Kind


class LightingPublisher(Extension):
    def start(self) -> None:
        self.subscribe(LightingChanged, self.on_change)

    def on_change(self, event: LightingChanged) -> None:
        topic = f"{self.ctx.base}/lighting/{event.target}"
        self.mqtt.publish(topic, event.to_json(), Kind.CONTROL, retain=True, qos=1)
