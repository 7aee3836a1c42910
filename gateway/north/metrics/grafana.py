"""The Grafana dashboards shipped in `grafana/`: a fleet overview and a cabinet view, generated from the panels here
(`scripts/grafana` writes them; a test checks the files are current and runs every panel's query against a real
Prometheus scraping an emulated site).

Import a file in Grafana (Dashboards > New > Import) and pick the Prometheus data source that scrapes your
gateways; the cabinet view's `instance` variable lists them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Panel:
    title: str
    expr: str
    kind: str = "timeseries"  # timeseries | stat | bargauge | table
    unit: str = "short"
    legend: str = ""
    width: int = 8


FLEET = [
    Panel("Gateways", "count(cityedge_gateway_info)", "stat", width=4),
    Panel("Gateways without their broker", "count(cityedge_mqtt_connected == 0) or vector(0)", "stat", width=4),
    Panel("Devices offline", 'sum(cityedge_devices{state="offline"})', "stat", width=4),
    Panel("Devices degraded", 'sum(cityedge_devices{state="degraded"})', "stat", width=4),
    Panel("Active alarms by severity", "sum by (severity) (cityedge_alarms_active)", "bargauge", legend="{{severity}}"),
    Panel("Unacknowledged alarms", "sum(cityedge_alarms_unacknowledged)", "stat", width=4),
    Panel("Outbox depth", "max by (instance) (cityedge_outbox_messages)", legend="{{instance}}"),
    Panel(
        "Oldest waiting message",
        "max by (instance) (cityedge_outbox_oldest_age_seconds)",
        unit="s",
        legend="{{instance}}",
    ),
    Panel(
        "Device errors per second",
        "sum by (instance) (rate(cityedge_device_errors_total[5m]))",
        unit="reqps",
        legend="{{instance}}",
    ),
    Panel("Gateway CPU", "rate(cityedge_cpu_seconds_total[5m])", unit="percentunit", legend="{{instance}}"),
    Panel("Gateway memory", "cityedge_resident_memory_bytes", unit="bytes", legend="{{instance}}"),
    Panel("Gateways and versions", "cityedge_gateway_info", "table", width=24),
]

AT = '{instance="$instance"}'
CABINET = [
    Panel("Broker connection", f"cityedge_mqtt_connected{AT}", "stat", width=4),
    Panel("Uptime", f"cityedge_uptime_seconds{AT}", "stat", unit="s", width=4),
    Panel("Devices by state", f"cityedge_devices{AT}", "bargauge", legend="{{state}}"),
    Panel("Active alarms", f"cityedge_alarms_active{AT}", "bargauge", legend="{{severity}}"),
    Panel("Devices not answering", f"cityedge_device_up{AT} == 0", "table"),
    Panel("Round-trip time", f"cityedge_device_round_trip_seconds{AT}", unit="s", legend="{{device}}"),
    Panel(
        "Errors by reason",
        f"sum by (device, reason) (rate(cityedge_device_errors_total{AT}[5m]))",
        unit="reqps",
        legend="{{device}} {{reason}}",
    ),
    Panel("Link utilization", f"cityedge_link_utilization_ratio{AT}", unit="percentunit", legend="{{link}}"),
    Panel(
        "Voltages", 'cityedge_point_value{instance="$instance", unit="V"}', unit="volt", legend="{{device}} {{point}}"
    ),
    Panel(
        "Lighting levels in effect",
        f"cityedge_lighting_level_percent{AT}",
        unit="percent",
        legend="{{target}} ({{reason}})",
    ),
    Panel(
        "Energy saved by dimming", f"cityedge_lighting_saved_energy_joules_total{AT}", unit="joule", legend="{{group}}"
    ),
    Panel("Node signal", f"cityedge_node_rssi_dbm{AT}", unit="dBm", legend="{{device}}"),
    Panel("Outbox depth", f"cityedge_outbox_messages{AT}"),
]

DASHBOARDS = {
    "fleet": ("CityEdge fleet", "cityedge-fleet", FLEET),
    "cabinet": ("CityEdge cabinet", "cityedge-cabinet", CABINET),
}


def dashboard(name: str) -> dict[str, Any]:
    title, uid, panels = DASHBOARDS[name]
    datasource = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    out: list[dict[str, Any]] = []
    x = y = row = 0
    for i, p in enumerate(panels, 1):
        height = 4 if p.kind == "stat" else 8
        if x + p.width > 24:
            x, y = 0, y + row
            row = 0
        out.append({
            "id": i, "type": p.kind, "title": p.title, "datasource": datasource,
            "gridPos": {"x": x, "y": y, "w": p.width, "h": height},
            "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"]}} if p.kind in ("stat", "bargauge") else {},
            "targets": [{"refId": "A", "datasource": datasource, "expr": p.expr, "legendFormat": p.legend,
                         "instant": p.kind in ("table", "bargauge")}],
        })  # fmt: skip
        x, row = x + p.width, max(row, height)
    templating: list[dict[str, Any]] = []
    if name == "cabinet":
        templating.append({
            "name": "instance", "label": "Gateway", "type": "query", "datasource": datasource,
            "query": {"query": "label_values(cityedge_gateway_info, instance)", "refId": "instance"},
            "definition": "label_values(cityedge_gateway_info, instance)", "refresh": 1,
        })  # fmt: skip
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource", "pluginId": "prometheus"}],
        "title": title, "uid": uid, "schemaVersion": 39, "version": 1, "editable": True,
        "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "tags": ["cityedge"],
        "templating": {"list": templating}, "panels": out,
    }  # fmt: skip


def render(name: str) -> str:
    return json.dumps(dashboard(name), indent=2) + "\n"


if __name__ == "__main__":
    import sys
    from pathlib import Path

    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "grafana")
    folder.mkdir(parents=True, exist_ok=True)
    for each in DASHBOARDS:
        (folder / f"{each}.json").write_text(render(each))
        print(folder / f"{each}.json")
