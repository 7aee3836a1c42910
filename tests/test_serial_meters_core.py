"""Serial meters get everything Modbus devices get, unchanged: the topic tree and its requests, Home Assistant,
`check` and `plan`, and a reload that restarts only what changed and keeps what the drivers learned."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from gateway.app import Gateway
from hil.broker import MosquittoBroker
from hil.fixtures import SiteFactory
from hil.site.scenario import gateway_config
from tests.cli_harness import cityedge
from tests.mqtt_harness import Watcher, start_gateway

BASE = "cityedge/cabinet"
HA = "homeassistant/device"

SITE: dict[str, Any] = {
    "links": [
        {"id": "meters", "type": "iec62056-serial", "wire_timing": False},
        {"id": "mbus", "type": "mbus-serial", "wire_timing": False},
        {"id": "wind-port", "type": "ascii-serial", "wire_timing": False},
    ],
    "devices": [
        {"id": "supply", "profile": "iskraemeco-mt174", "link": "meters", "address": "71234567", "poll": 0.5,
         "values": {"energy_import": 4711.125}},
        {"id": "heat", "profile": "kamstrup-multical-601", "link": "mbus", "address": 1, "poll": 0.5,
         "values": {"energy": 37351.0, "flow_temperature": 70.5}},
        {"id": "wind", "profile": "gill-windsonic", "link": "wind-port", "poll": 0.5,
         "values": {"direction": 229, "speed": 2.74, "status": 0}, "options": {"period": 0.1}},
    ],
}  # fmt: skip


def _config(tmp_path: Path, site: Any, mosquitto: MosquittoBroker) -> Path:
    data = gateway_config(site.loaded, site.endpoint_addresses())
    data["gateway"] = {"id": "cabinet", "health_interval": 1}
    data["mqtt"] = {"host": mosquitto.host, "port": mosquitto.port, "keepalive": 5}
    data["store"] = {"path": str(tmp_path / "outbox.db")}
    data["homeassistant"] = {"enabled": True}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


async def test_meters_in_the_tree_home_assistant_and_a_reload(
    site_factory: SiteFactory, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    site = await site_factory(SITE)
    path = _config(tmp_path, site, mosquitto)
    w = Watcher(mosquitto, ("cityedge/#", "homeassistant/#"))
    await w.start()
    gateway: Gateway = await start_gateway(path)
    try:
        for device, key, value in (("supply", "energy_import", 4711.125), ("heat", "flow_temperature", 70.5),
                                   ("wind", "direction", 229)):  # fmt: skip
            await w.wait_for(
                lambda s, d=device, k=key, v=value: (
                    s.topic == f"{BASE}/{d}/state" and s.json().get("values", {}).get(k) == v
                ),
                what=f"{device} {key}",
            )
        # Home Assistant: each meter a device, its points sensors with their classes and units
        found = await w.wait_for(lambda s: s.topic == f"{HA}/cityedge_cabinet_supply/config" and bool(s.payload))
        announced = found.json()
        energy = next(c for c in announced["cmps"].values() if c.get("unique_id", "").endswith("energy_import"))
        assert (energy["device_class"], energy["state_class"], energy["unit_of_measurement"]) == (
            "energy", "total_increasing", "kWh",
        )  # fmt: skip
        heat = (await w.wait_for(lambda s: s.topic == f"{HA}/cityedge_cabinet_heat/config" and bool(s.payload))).json()
        assert any(c.get("device_class") == "temperature" for c in heat["cmps"].values())
        # the tree's requests: devices with their addresses, a point read now
        devices = {d["id"]: d for d in (await w.request(BASE, "devices"))["data"]}
        assert devices["heat"]["address"] == 1 and devices["supply"]["address"] == "71234567"
        answer = await w.request(BASE, "read", {"device": "heat", "point": "energy"})
        assert answer["status"] == "ok" and answer["data"]["value"] == 37351.0
        refused = await w.command(BASE, "supply", {"values": {"energy_import": 0}})
        assert refused["error"]["code"] == "read_only"

        # a reload that changes one device restarts that device only, and keeps what its driver learned
        live = gateway.store.get("supply")
        assert live is not None and "readout" in live.health.to_json()["learned"]
        data = yaml.safe_load(path.read_text())
        for device in data["devices"]:
            if device["id"] == "heat":
                device["poll"] = 0.7
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        report = await gateway.reload()
        assert report.get("devices_restarted") == ["heat"] and not report.get("links_restarted"), report
        still = gateway.store.get("supply")
        assert still is not None and "readout" in still.health.to_json()["learned"]
    finally:
        await gateway.stop()
        await w.stop()


async def test_check_and_plan_show_meters_in_their_own_terms(site_factory: SiteFactory, tmp_path: Path) -> None:
    site = await site_factory(SITE)
    data = gateway_config(site.loaded, site.endpoint_addresses())
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    shown = cityedge("check", "-c", str(path))
    assert shown.returncode == 0, shown.stderr
    assert "iec62056-serial" in shown.stdout and "300 7E1, up to 19200" in shown.stdout
    assert "wind             gill-windsonic on wind-port (the only device on its port)" in shown.stdout
    plan = cityedge("plan", "-c", str(path), "--json")
    assert plan.returncode == 0, plan.stderr
    planned = {d["device"]: d["groups"][0] for d in json.loads(plan.stdout)["devices"]}
    assert planned["supply"]["requests"][0]["readout"] == 200
    at = planned["supply"]["requests"][0]["seconds_at_baud"]
    assert list(at) == ["300", "600", "1200", "2400", "4800", "9600"] and at["300"] > at["9600"]
    assert planned["heat"]["requests"][0]["telegrams"] == 4
    # a readout's time on the wire: sign-on (13), identification (20) and acknowledgement (6) characters at 300
    # baud 7E1, three 20 ms reactions (ISk: lowercase k), and 200 characters at the 9600 baud the MT174 offers
    assert planned["supply"]["bus_time_s"] == round(39 * 10 / 300 + 3 * 0.020 + 200 * 10 / 9600, 6)
