"""`<base>/indicators`, retained: per lamp group burning hours, switch-ons, energy used, at full power and saved;
per feeder the metered energy. Published every `indicators.interval`; `<base>/request/indicators` answers now."""

from __future__ import annotations

from gateway.edge.indicators.tracker import IndicatorsChanged
from gateway.north.extensions.base import Extension
from gateway.north.message import Kind


class IndicatorPublisher(Extension):
    def start(self) -> None:
        self.subscribe(IndicatorsChanged, self.on_change)

    def on_change(self, event: IndicatorsChanged) -> None:
        self.mqtt.publish(f"{self.ctx.base}/indicators", event.indicators, Kind.CONTROL, retain=True, qos=1)
