"""What the gateway knows, as Prometheus metrics: read from the live state store at each scrape.

Nothing is counted on the poll path: a scrape walks the store (devices, their health and
values, the gateway's sections) and builds the families then, so polling costs the same
with the exporter on. Names follow Prometheus conventions: the `cityedge_` prefix, base
units in the name (`_seconds`, `_bytes`, `_ratio`, `_joules`), `_total` for counters.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.core.state import STATES, StateStore
from gateway.north.web_settings import MetricsSettings

SEVERITIES = ("critical", "major", "minor", "warning")
_UNIT = re.compile(r"[^A-Za-z0-9_%/.]")


def _finite(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


class PointFilter:
    """The allow-list of point series: `device.point` patterns, at most `limit` series."""

    def __init__(self, patterns: list[str], limit: int) -> None:
        self.patterns, self.limit = patterns, limit
        self._cache: dict[tuple[str, str], bool] = {}

    def allows(self, device: str, point: str) -> bool:
        key = (device, point)
        allowed = self._cache.get(key)
        if allowed is None:
            name = f"{device}.{point}"
            allowed = any(fnmatch.fnmatchcase(name, p) for p in self.patterns)
            if len(self._cache) < 1_000_000:
                self._cache[key] = allowed
        return allowed


class GatewayCollector(Collector):
    def __init__(self, store: StateStore, gateway_id: str, settings: MetricsSettings) -> None:
        self.store, self.gateway_id = store, gateway_id
        self.filter = PointFilter(settings.points, settings.max_points)

    def collect(self) -> Iterator[Metric]:
        health = self.store.gateway_health()
        yield from self._gateway(health)
        yield from self._devices()
        yield from self._links(health.get("links") or {})
        yield from self._outbox(health.get("outbox") or {})
        yield from self._mqtt(health.get("mqtt") or {})
        yield from self._alarms(health.get("alarms"))
        yield from self._lighting(health.get("lighting"), health.get("indicators"))

    # -- the gateway -------------------------------------------------------------------------------

    def _gateway(self, health: Mapping[str, Any]) -> Iterator[Metric]:
        info = InfoMetricFamily("cityedge_gateway", "The gateway: its id and version.")
        info.add_metric([], {"gateway": self.gateway_id, "version": str(health.get("version", ""))})
        yield info
        yield GaugeMetricFamily(
            "cityedge_uptime_seconds", "Seconds since the gateway started.", value=float(health.get("uptime_s", 0))
        )
        yield GaugeMetricFamily(
            "cityedge_resident_memory_bytes",
            "Resident memory of the gateway process.",
            value=float(health.get("memory_mb", 0)) * 1024 * 1024,
        )
        yield CounterMetricFamily(
            "cityedge_cpu_seconds", "CPU time the gateway process used.", value=float(health.get("cpu_s", 0))
        )
        devices = GaugeMetricFamily("cityedge_devices", "Devices and nodes by health state.", labels=["state"])
        for state, count in (health.get("devices") or {}).items():
            devices.add_metric([state], float(count))
        yield devices
        dropped = CounterMetricFamily(
            "cityedge_dropped_inputs", "Inputs refused or set aside, by kind.", labels=["kind"]
        )
        for kind, count in (health.get("dropped_inputs") or {}).items():
            if isinstance(count, int | float):
                dropped.add_metric([kind], float(count))
        yield dropped
        tasks = health.get("tasks") or {}
        yield CounterMetricFamily(
            "cityedge_task_restarts",
            "Restarts of the gateway's long-lived tasks.",
            value=float(tasks.get("restarts", 0)),
        )

    # -- devices and nodes -----------------------------------------------------------------------------

    def _devices(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "cityedge_device_state",
            "1 for the state a device is in (online, degraded, offline).",
            labels=["device", "state"],
        )
        up = GaugeMetricFamily(
            "cityedge_device_up", "1 while a device answers (online or degraded).", labels=["device"]
        )
        requests = CounterMetricFamily("cityedge_device_requests", "Requests sent to a device.", labels=["device"])
        errors = CounterMetricFamily(
            "cityedge_device_errors", "Failed requests by reason (timeout, crc, ...).", labels=["device", "reason"]
        )
        cycles = CounterMetricFamily("cityedge_device_cycles", "Poll cycles of a device.", labels=["device"])
        failed = CounterMetricFamily("cityedge_device_failed_cycles", "Poll cycles that failed.", labels=["device"])
        overruns = CounterMetricFamily(
            "cityedge_device_overruns", "Poll slots skipped: the link was too busy.", labels=["device"]
        )
        implausible = CounterMetricFamily(
            "cityedge_device_implausible_readings", "Readings outside their point's plausible range.", labels=["device"]
        )
        rtt = GaugeMetricFamily(
            "cityedge_device_round_trip_seconds", "Round-trip time, moving average.", labels=["device"]
        )
        rtt_max = GaugeMetricFamily(
            "cityedge_device_round_trip_max_seconds", "Longest round-trip time seen.", labels=["device"]
        )
        backoff = GaugeMetricFamily(
            "cityedge_device_backoff_seconds",
            "Current wait between probes of an offline device (0 while it answers).",
            labels=["device"],
        )
        rssi = GaugeMetricFamily("cityedge_node_rssi_dbm", "A node's WiFi signal.", labels=["device"])
        heap = GaugeMetricFamily("cityedge_node_free_heap_bytes", "A node's free heap.", labels=["device"])
        node_up = GaugeMetricFamily("cityedge_node_uptime_seconds", "Seconds since the node booted.", labels=["device"])
        values = GaugeMetricFamily(
            "cityedge_point_value",
            "A point's current value, in its unit (booleans 0/1).",
            labels=["device", "point", "unit"],
        )
        exported = dropped = 0
        for device in self.store.devices():
            name, h = device.id, device.health
            current = h.state_name
            for s in STATES:
                state.add_metric([name, s], 1.0 if s == current else 0.0)
            up.add_metric([name], 0.0 if current == "offline" else 1.0)
            data = h.to_json()
            if device.source == "node":
                report = data.get("node") or {}
                for family, key in ((rssi, "rssi"), (heap, "free_heap"), (node_up, "uptime_s")):
                    number = _finite(report.get(key))
                    if number is not None and not isinstance(report.get(key), bool):
                        family.add_metric([name], number)
            else:
                requests.add_metric([name], float(data.get("requests", 0)))
                for reason, count in (data.get("errors") or {}).items():
                    errors.add_metric([name, str(reason)], float(count))
                cycles.add_metric([name], float(data.get("cycles", 0)))
                failed.add_metric([name], float(data.get("failed_cycles", 0)))
                overruns.add_metric([name], float(data.get("overruns", 0)))
                backoff.add_metric([name], float(data.get("backoff_s", 0)))
                trip = data.get("rtt") or {}
                rtt.add_metric([name], float(trip.get("avg_ms", 0)) / 1000)
                rtt_max.add_metric([name], float(trip.get("max_ms", 0)) / 1000)
            implausible.add_metric([name], float(data.get("implausible", 0)))
            units = {p.name: p.unit or "" for p in device.resolved.points}
            for point, value in device.values.items():
                number = _finite(value)
                if number is None or not self.filter.allows(name, point):
                    continue
                if exported >= self.filter.limit:
                    dropped += 1
                    continue
                values.add_metric([name, point, _UNIT.sub("", units.get(point, ""))], number)
                exported += 1
        yield from (state, up, requests, errors, cycles, failed, overruns, implausible, rtt, rtt_max, backoff)
        yield from (rssi, heap, node_up, values)
        yield GaugeMetricFamily(
            "cityedge_point_series_dropped", "Point values not exported: beyond max_points.", value=float(dropped)
        )

    # -- links, outbox, broker -----------------------------------------------------------------------------

    def _links(self, links: Mapping[str, Any]) -> Iterator[Metric]:
        up = GaugeMetricFamily("cityedge_link_up", "1 while a link is up.", labels=["link"])
        utilization = GaugeMetricFamily(
            "cityedge_link_utilization_ratio", "Share of time the link is busy.", labels=["link"]
        )
        reconnects = CounterMetricFamily("cityedge_link_reconnects", "Times a link reconnected.", labels=["link"])
        noise = CounterMetricFamily("cityedge_link_noise_bytes", "Bytes of noise skipped on a link.", labels=["link"])
        requests = CounterMetricFamily("cityedge_link_requests", "Requests on a link.", labels=["link"])
        errors = CounterMetricFamily(
            "cityedge_link_errors", "Failed requests on a link, by reason.", labels=["link", "reason"]
        )
        rtt = GaugeMetricFamily(
            "cityedge_link_round_trip_seconds", "Round-trip time on a link, moving average.", labels=["link"]
        )
        for name, link in links.items():
            if not isinstance(link, Mapping):
                continue
            up.add_metric([name], 1.0 if link.get("state") == "up" else 0.0)
            utilization.add_metric([name], float(link.get("utilization") or 0))
            reconnects.add_metric([name], float(link.get("reconnects") or 0))
            noise.add_metric([name], float(link.get("noise_bytes") or 0))
            requests.add_metric([name], float(link.get("requests") or 0))
            for reason, count in (link.get("errors") or {}).items():
                errors.add_metric([name, str(reason)], float(count))
            rtt.add_metric([name], float((link.get("rtt") or {}).get("avg_ms", 0)) / 1000)
        yield from (up, utilization, reconnects, noise, requests, errors, rtt)

    def _outbox(self, outbox: Mapping[str, Any]) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "cityedge_outbox_messages", "Messages waiting in the outbox.", value=float(outbox.get("depth") or 0)
        )
        yield GaugeMetricFamily(
            "cityedge_outbox_oldest_age_seconds",
            "Age of the oldest waiting message.",
            value=float(outbox.get("oldest_age_s") or 0),
        )
        yield GaugeMetricFamily(
            "cityedge_outbox_disk_bytes",
            "Bytes the outbox holds on disk.",
            value=float(outbox.get("bytes_on_disk") or 0),
        )
        yield CounterMetricFamily(
            "cityedge_outbox_sent_messages",
            "Messages the outbox delivered to the broker.",
            value=float(outbox.get("sent") or 0),
        )
        dropped = CounterMetricFamily("cityedge_outbox_dropped_messages", "Messages dropped, by kind.", labels=["kind"])
        for kind, count in (outbox.get("dropped") or {}).items():
            dropped.add_metric([kind], float(count))
        yield dropped

    def _mqtt(self, mqtt: Mapping[str, Any]) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "cityedge_mqtt_connected",
            "1 while the gateway is connected to its broker.",
            value=1.0 if mqtt.get("connected") else 0.0,
        )
        yield CounterMetricFamily(
            "cityedge_mqtt_connects", "Connections made to the broker.", value=float(mqtt.get("connects") or 0)
        )
        yield CounterMetricFamily(
            "cityedge_mqtt_connect_failures", "Connection attempts that failed.", value=float(mqtt.get("failures") or 0)
        )
        yield CounterMetricFamily(
            "cityedge_mqtt_received_messages",
            "Messages received from the broker.",
            value=float(mqtt.get("received") or 0),
        )
        yield CounterMetricFamily(
            "cityedge_mqtt_takeovers",
            "Times another client took the gateway's client id.",
            value=float(mqtt.get("takeovers") or 0),
        )

    # -- automation -------------------------------------------------------------------------------------

    def _alarms(self, alarms: Any) -> Iterator[Metric]:
        active = GaugeMetricFamily("cityedge_alarms_active", "Active alarms, by severity.", labels=["severity"])
        unacked = GaugeMetricFamily(
            "cityedge_alarms_unacknowledged", "Alarms nobody acknowledged yet, by severity.", labels=["severity"]
        )
        listed = alarms if isinstance(alarms, list) else []
        for severity in SEVERITIES:
            mine = [a for a in listed if isinstance(a, Mapping) and a.get("severity") == severity]
            active.add_metric([severity], float(sum(bool(a.get("active")) for a in mine)))
            unacked.add_metric([severity], float(sum(a.get("acked_by") is None for a in mine)))
        yield from (active, unacked)

    def _lighting(self, lighting: Any, indicators: Any) -> Iterator[Metric]:
        level = GaugeMetricFamily(
            "cityedge_lighting_level_percent",
            "A lighting target's level in effect, and why.",
            labels=["target", "reason"],
        )
        program = GaugeMetricFamily(
            "cityedge_lighting_program_level_percent", "What the program alone says.", labels=["target"]
        )
        for target, state in (lighting or {}).items() if isinstance(lighting, Mapping) else ():
            if isinstance(state, Mapping) and _finite(state.get("level")) is not None:
                level.add_metric([target, str(state.get("reason", ""))], float(state["level"]))
                if _finite(state.get("target_level")) is not None:
                    program.add_metric([target], float(state["target_level"]))
        yield from (level, program)
        groups = (indicators or {}).get("groups") if isinstance(indicators, Mapping) else None
        burning = CounterMetricFamily(
            "cityedge_lighting_burning_seconds", "Time a lamp group was on.", labels=["group"]
        )
        used = CounterMetricFamily("cityedge_lighting_energy_joules", "Energy a lamp group used.", labels=["group"])
        saved = CounterMetricFamily(
            "cityedge_lighting_saved_energy_joules",
            "Energy saved against the same lamps at full power.",
            labels=["group"],
        )
        available = GaugeMetricFamily(
            "cityedge_lamp_availability_ratio", "Share of lamp-hours with the lamp working.", labels=["group"]
        )
        for group, g in (groups or {}).items():
            if not isinstance(g, Mapping):
                continue
            burning.add_metric([group], float(g.get("burning_hours") or 0) * 3600)
            used.add_metric([group], float(g.get("energy_kwh") or 0) * 3.6e6)
            saved.add_metric([group], max(0.0, float(g.get("saved_kwh") or 0)) * 3.6e6)
            if _finite(g.get("availability_percent")) is not None:
                available.add_metric([group], float(g["availability_percent"]) / 100)
        yield from (burning, used, saved, available)
