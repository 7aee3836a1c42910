"""The Prometheus endpoint: `promtool check metrics` clean on a real scrape; a real Prometheus (Debian's package),
started here on a free loopback port, scrapes the gateway in front of an emulated site; the PromQL of every panel of
the shipped Grafana dashboards runs against it and returns what the site's known state says."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.north.metrics.grafana import CABINET, DASHBOARDS, FLEET, render
from hil.broker import MosquittoBroker, free_port
from hil.fixtures import SiteFactory
from tests.web_harness import ROOT, SITE, fetch, http, metrics_url, poll, running, site_file


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin")
    if found is None:
        pytest.fail(f"{name} is not installed: run scripts/setup (or: sudo apt-get install prometheus)")
    return found


@asynccontextmanager
async def prometheus(tmp_path: Path, target: str) -> AsyncIterator[Callable[[str], Awaitable[Any]]]:
    """A real Prometheus scraping `target` (host:port) every second; yields a PromQL instant query."""
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: cityedge\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    process = subprocess.Popen(
        [_tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"),  # noqa: SIM115
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    async def query(expr: str) -> Any:
        status, _, body = await fetch(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert status == 200 and body["status"] == "success", (expr, body)
        return body["data"]["result"]

    try:
        await poll(lambda: asyncio.to_thread(_ready, base), bool, 30, "Prometheus ready")
        yield query
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _ready(base: str) -> bool:
    try:
        return http(f"{base}/-/ready")[0] == 200
    except OSError:
        return False


def _values(result: list[dict[str, Any]], label: str | None = None) -> dict[str, float]:
    return {(r["metric"].get(label, "") if label else ""): float(r["value"][1]) for r in result}


async def test_a_scrape_is_clean_for_promtool_and_the_allow_list_holds(
    site_factory: SiteFactory, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    site = await site_factory(SITE)
    allow = ["meter.voltage_*", "lamps.ballast_?_level"]
    path = site_file(site, mosquitto, tmp_path, metrics={"port": 0, "points": allow})
    async with running(path) as gateway:
        url = metrics_url(gateway)
        status, headers, text = await poll(lambda: fetch(url), lambda r: "voltage_l3" in r[2], 15, "the meter's values")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        checked = subprocess.run([_tool("promtool"), "check", "metrics"], input=text, capture_output=True, text=True,
                                 timeout=60, check=False)  # fmt: skip
        assert checked.returncode == 0 and checked.stdout == checked.stderr == "", checked.stdout + checked.stderr
        points = {line.split("{", 1)[1].split("}")[0] for line in text.splitlines()
                  if line.startswith("cityedge_point_value{")}  # fmt: skip
        shown = sorted(p.split('point="')[1].split('"')[0] for p in points)
        assert shown == [*(f"ballast_{i}_level" for i in range(4)), "voltage_l1", "voltage_l2", "voltage_l3"], shown
        assert 'unit="V"' in text and "cityedge_point_series_dropped 0.0" in text
        status, headers, text = await fetch(url, None, {"Accept": "application/openmetrics-text; version=1.0.0"})
        assert headers["Content-Type"].startswith("application/openmetrics-text") and text.endswith("# EOF\n")


@pytest.mark.long
async def test_prometheus_scrapes_the_gateway_and_every_grafana_panel_answers(
    site_factory: SiteFactory, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """The site's known state: three devices online, 230 V on the meter, the street lamps at the program's 60 %;
    then a lamp fails (one minor alarm) and the relay stops answering (offline, device_up 0)."""
    site = await site_factory(SITE)
    async with running(site_file(site, mosquitto, tmp_path)) as gateway:
        target = metrics_url(gateway).split("//")[1].split("/")[0]
        instance = {"$instance": target}
        async with prometheus(tmp_path, target) as query:

            async def q(expr: str) -> list[dict[str, Any]]:
                for name, value in instance.items():
                    expr = expr.replace(name, value)
                return await query(expr)  # type: ignore[no-any-return]

            online = 'cityedge_devices{state="online"}'
            await poll(lambda: q(online), lambda r: _values(r) == {"": 3.0}, 30, "three devices online")
            site.stimulus("lamps", "lamp_failure", {"ballast": 3})
            site.set_fault("relay", {"timeout": True})
            await poll(lambda: q(FLEET[2].expr), lambda r: _values(r) == {"": 1.0}, 30, "the relay offline")
            await poll(lambda: q(FLEET[4].expr), lambda r: _values(r, "severity").get("minor") == 1.0, 30, "the alarm")
            await asyncio.sleep(2.5)  # a few more scrapes: rates have two points at least
            expected: dict[str, Callable[[list[dict[str, Any]]], bool]] = {
                "Gateways": lambda r: _values(r) == {"": 1.0},
                "Gateways without their broker": lambda r: _values(r) == {"": 0.0},
                "Devices offline": lambda r: _values(r) == {"": 1.0},
                "Devices degraded": lambda r: _values(r) == {"": 0.0},
                "Active alarms by severity": lambda r: _values(r, "severity") == {"critical": 0, "major": 0,
                                                                                 "minor": 1, "warning": 0},
                "Unacknowledged alarms": lambda r: _values(r) == {"": 1.0},
                "Outbox depth": lambda r: len(r) == 1,
                "Oldest waiting message": lambda r: len(r) == 1 and float(r[0]["value"][1]) >= 0,
                "Device errors per second": lambda r: len(r) == 1 and float(r[0]["value"][1]) > 0,  # the timeouts
                "Gateway CPU": lambda r: len(r) == 1 and 0 <= float(r[0]["value"][1]) < 2,
                "Gateway memory": lambda r: len(r) == 1 and 10e6 < float(r[0]["value"][1]) < 2e9,
                "Gateways and versions": lambda r: r[0]["metric"]["gateway"] == "block",
                "Broker connection": lambda r: _values(r) == {"": 1.0},
                "Uptime": lambda r: float(r[0]["value"][1]) > 1,
                "Devices by state": lambda r: _values(r, "state") == {"online": 2, "degraded": 0, "offline": 1},
                "Active alarms": lambda r: _values(r, "severity")["minor"] == 1,
                "Devices not answering": lambda r: [x["metric"]["device"] for x in r] == ["relay"],
                "Round-trip time": lambda r: {x["metric"]["device"] for x in r} == {"lamps", "meter", "relay"},
                "Errors by reason": lambda r: any(x["metric"] == {"device": "relay", "reason": "timeout"} for x in r),
                "Link utilization": lambda r: _values(r, "link").keys() == {"net"},
                "Voltages": lambda r: {x["metric"]["point"] for x in r} == {"voltage_l1", "voltage_l2", "voltage_l3"}
                and all(220 < float(x["value"][1]) < 240 for x in r),
                "Lighting levels in effect": lambda r: _values(r, "target") == {"street": 60.0}
                and r[0]["metric"]["reason"] == "program",
                "Energy saved by dimming": lambda r: r == [],  # no indicators in this configuration
                "Node signal": lambda r: r == [],  # no nodes on this site
            }  # fmt: skip
            panels = [p for _, _, ps in DASHBOARDS.values() for p in ps]
            assert {p.title for p in panels} == set(expected), "every panel has its expectation here"
            for panel in panels:
                result = await q(panel.expr)
                assert expected[panel.title](result), (panel.title, panel.expr, result)
            assert len(panels) == len(FLEET) + len(CABINET)


def test_the_shipped_grafana_files_are_the_generated_ones() -> None:
    for name in DASHBOARDS:
        shipped = (ROOT / "grafana" / f"{name}.json").read_text()
        assert shipped == render(name), f"grafana/{name}.json is stale: run scripts/grafana"
        data = json.loads(shipped)
        ids = [p["id"] for p in data["panels"]]
        assert len(ids) == len(set(ids)) and all(p["targets"][0]["expr"] for p in data["panels"])
        for p in data["panels"]:  # the grid: inside 24 columns, no two panels on the same cells
            assert p["gridPos"]["x"] >= 0 and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        cells = [(p["gridPos"]["x"] + dx, p["gridPos"]["y"] + dy) for p in data["panels"]
                 for dx in range(p["gridPos"]["w"]) for dy in range(p["gridPos"]["h"])]  # fmt: skip
        assert len(cells) == len(set(cells)), f"panels of {name} overlap"
