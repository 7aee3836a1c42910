"""The active alarm list on the CityEdge tree: `<base>/alarms`, retained, most severe first.

    [{"id": "river-flood", "severity": "critical", "message": "river-level.level above 3.2",
      "device": "river-level", "active": true, "raised": "2026-06-28T01:00:00+00:00", "value": 3.4}]

An alarm leaves the list when it is cleared and acknowledged; transitions are on `<base>/event`.
Acknowledge with `<base>/request/ack` `{"alarm", "by"}`, shelve with `<base>/request/shelve`
`{"alarm", "by", "duration"}` (seconds), list with `<base>/request/alarms`.
"""

from __future__ import annotations

from gateway.edge.alarms.manager import AlarmsChanged
from gateway.north.extensions.base import Extension
from gateway.north.message import Kind


class AlarmPublisher(Extension):
    def start(self) -> None:
        self.subscribe(AlarmsChanged, self.on_change)

    def on_change(self, event: AlarmsChanged) -> None:
        self.mqtt.publish(f"{self.ctx.base}/alarms", event.alarms, Kind.CONTROL, retain=True, qos=1)
