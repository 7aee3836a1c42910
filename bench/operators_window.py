"""What the operators' window costs the gateway: the Prometheus exporter and the dashboard, measured from outside.

The same cabinet twice (emulated devices, mosquitto, `cityedge run` as three processes): 200 meters x 100
float32 polled every 500 ms plus a 16-lamp DALI gateway. First without `metrics` and `dashboard`, then with
both on, a scrape of /metrics every 15 s (every point allowed: 20 000 series) and five dashboards open on
the live stream, one of them watching a meter's points. The gateway's CPU time over the window
(/proc/<pid>/stat) gives its load in each run; the difference is what the window costs, in % of one core.

Run: .venv/bin/python bench/operators_window.py [--devices 200] [--seconds 60]   (or bench/run)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cabinet, report  # noqa: E402
from bench.gateway_footprint import cpu_seconds, memory_mb  # noqa: E402
from hil.broker import free_port  # noqa: E402


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=30) as response:
        return len(response.read())


async def _connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The gateway takes a while to start 200 devices: wait for its port (a minute at most)."""
    for _ in range(600):
        try:
            return await asyncio.open_connection(host, port)
        except ConnectionRefusedError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing listens on {host}:{port}")


async def _dashboard(url: str, stop: asyncio.Event, received: list[int]) -> None:
    """One open page: reads the event stream as a browser does."""
    host, _, rest = url.removeprefix("http://").partition("/")
    name, _, port = host.partition(":")
    reader, writer = await _connect(name, int(port))
    writer.write(f"GET /{rest} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    try:
        while not stop.is_set():
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 1.0)
            except TimeoutError:
                continue
            if not chunk:
                break
            received[0] += len(chunk)
    finally:
        writer.close()


async def measure(pid: int, warmup: float, seconds: float, web: tuple[int, int] | None) -> dict[str, Any]:
    stop, received, scraped, scrapes = asyncio.Event(), [0], 0, 0
    tasks = []
    if web is not None:
        dashboard = web[1]
        streams = [f"http://127.0.0.1:{dashboard}/api/stream"] * 4 + [
            f"http://127.0.0.1:{dashboard}/api/stream?device=m0"
        ]
        tasks = [asyncio.create_task(_dashboard(url, stop, received)) for url in streams]
    await asyncio.sleep(warmup)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    while time.monotonic() - t0 < seconds:
        if web is not None:
            scraped += await asyncio.to_thread(_get, f"http://127.0.0.1:{web[0]}/metrics")
            scrapes += 1
        await asyncio.sleep(min(15.0, max(0.0, seconds - (time.monotonic() - t0))))
    cpu, elapsed = cpu_seconds(pid) - cpu0, time.monotonic() - t0
    stop.set()
    for task in tasks:
        await task
    return {
        "cpu_load": round(cpu / elapsed, 4),
        "scrapes": scrapes,
        "scrape_kb": round(scraped / max(scrapes, 1) / 1024, 1),
        "stream_kb_per_s": round(received[0] / elapsed / 1024, 1),
        **memory_mb(pid),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    for name in ("without", "with"):
        web = (free_port(), free_port()) if name == "with" else None
        extra = None if web is None else {"metrics": {"port": web[0]}, "dashboard": {"port": web[1]}}
        with cabinet(args.devices, extra=extra) as (_, gateway):
            results[name] = asyncio.run(measure(gateway.pid, args.warmup, args.seconds, web))
        print(name, results[name], flush=True)
    cost = results["with"]["cpu_load"] - results["without"]["cpu_load"]
    load = (f"{args.devices} devices x 100 float32 every 500 ms + 16 lamps; with: a scrape every 15 s and five "
            "dashboards on the live stream")  # fmt: skip
    rows = [
        ("gateway CPU without (share of one core)", results["without"]["cpu_load"]),
        ("gateway CPU with metrics and dashboards", results["with"]["cpu_load"]),
        ("cost of the window (% of one core)", round(100 * cost, 2)),
        ("one scrape (kB)", results["with"]["scrape_kb"]),
        ("five streams together (kB/s)", results["with"]["stream_kb_per_s"]),
        ("resident memory without / with (MB)", f"{results['without']['rss_mb']} / {results['with']['rss_mb']}"),
    ]
    report("operators_window", ["measure", "value"], rows, {"load": load, **results, "cost_percent": 100 * cost})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
