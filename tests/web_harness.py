"""A gateway with its dashboard and metrics against an emulated site, a dashboard user, and Debian's Chromium driven
by Playwright (executable_path: no browser download)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from gateway.app import Gateway
from hil.broker import MosquittoBroker
from hil.site.scenario import gateway_config

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The machine's network is closed: Chromium must not try to reach Google's services (see the machine notes).
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]  # fmt: skip
PASSWORD = "correct horse battery"  # test-only, at least 10 characters

SITE: dict[str, Any] = {
    "links": [{"id": "net", "type": "modbus-tcp"}],
    "devices": [
        {"id": "lamps", "profile": "dali-modbus-gateway", "link": "net", "unit": 2,
         "params": {"ballasts": 4, "groups": 2}, "poll": 0.5, "options": {"fade_time": 0}},
        {"id": "meter", "profile": "eastron-sdm630", "link": "net", "unit": 1, "poll": 0.5},
        {"id": "relay", "profile": "feeder-protection-relay", "link": "net", "unit": 3, "poll": 0.5},
    ],
}  # fmt: skip
LIGHTING = {
    "site": {"latitude": 41.3874, "longitude": 2.1686, "timezone": "Europe/Madrid"},
    "programs": {"night": [{"at": "00:00", "level": 60}]},
    "calendar": {"default": "night"},
    "targets": [{"id": "street", "device": "lamps", "point": "group_0_arc_power"}],
}


def add_user(users: Path, name: str, password: str = PASSWORD) -> None:
    """Through the real CLI, as an integrator would."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "users", "add", name, "-f", str(users), "--password-stdin"],
        check=False, input=password + "\n", capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def site_file(site: Any, mosquitto: MosquittoBroker, tmp_path: Path, **sections: Any) -> Path:
    data = gateway_config(site.loaded, site.endpoint_addresses())
    data["gateway"] = {"id": "block", "health_interval": 1, "sbo_timeout": 30}
    data["mqtt"] = {"host": mosquitto.host, "port": mosquitto.port, "keepalive": 5}
    data["store"] = {"path": str(tmp_path / "outbox.db")}
    data["dashboard"] = {"port": 0, "users": str(tmp_path / "users.json")}
    data["metrics"] = {"port": 0}
    data["lighting"] = LIGHTING
    data.update(sections)
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@asynccontextmanager
async def running(path: Path) -> AsyncIterator[Gateway]:
    gateway = Gateway(path)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


def dashboard_url(gateway: Gateway) -> str:
    from gateway.north.dashboard.server import Dashboard

    (dashboard,) = [w for w in gateway.web if isinstance(w, Dashboard)]
    return f"http://127.0.0.1:{dashboard.port}"


def metrics_url(gateway: Gateway) -> str:
    from gateway.north.metrics.server import MetricsServer

    (metrics,) = [w for w in gateway.web if isinstance(w, MetricsServer)]
    return f"http://127.0.0.1:{metrics.port}/metrics"


def http(url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """A blocking HTTP call (run it in a thread): status, headers, the JSON (or text) answer."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, head, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, head, raw = exc.code, dict(exc.headers), exc.read()
    try:
        return status, head, json.loads(raw)
    except ValueError:
        return status, head, raw.decode(errors="replace")


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run scripts/setup (or: sudo apt-get install chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield browser
        finally:
            await browser.close()


async def fetch(url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """`http` in a thread: the gateway under test answers from this very event loop."""
    return await asyncio.to_thread(http, url, body, headers)


async def poll(get: Callable[[], Awaitable[T]], check: Callable[[T], object], timeout: float, what: str) -> T:
    """Call `get` until `check` holds for its answer; fail after `timeout` seconds, saying what was last seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await get()
        if check(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s; last: {value!r}"[:3000])
        await asyncio.sleep(0.3)
