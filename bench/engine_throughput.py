"""Modbus engine throughput: points/s, gateway CPU seconds per 1,000 points, memory, delivery, bus efficiency.

Emulated devices run in their own process (`cityedge hil serve`), so the CPU figure is
the gateway's alone (getrusage of this process, which runs only the engine).

Run: .venv/bin/python bench/engine_throughput.py [--seconds 20]   (or bench/run)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import meter_profile as profile  # noqa: E402
from bench.common import report  # noqa: E402
from gateway.config.loader import load_config  # noqa: E402
from gateway.core.engine import Engine  # noqa: E402
from gateway.core.events import DeviceUpdate, EventBus  # noqa: E402
from hil.ptyline import transaction_time  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Site:
    """`cityedge hil serve` in a subprocess, and a gateway configuration pointing at it."""

    def __init__(self, tmp: Path, scenario: dict[str, Any]) -> None:
        self.tmp = tmp
        path = tmp / f"{scenario['name']}.yaml"
        path.write_text(yaml.safe_dump(scenario, sort_keys=False))
        self.gateway = tmp / f"{scenario['name']}-gateway.yaml"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "hil",
                "serve",
                str(path),
                "--json",
                "--no-timeline",
                "--control",
                str(tmp / f"{scenario['name']}.sock"),
                "--gateway-config",
                str(self.gateway),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        self.info = json.loads(self.proc.stdout.readline())

    def config(self, poll: float, timeout: float = 1.0) -> Path:
        data = yaml.safe_load(self.gateway.read_text())
        for device in data["devices"]:
            device["poll"] = poll
            device["report"] = {"mode": "periodic"}
        for link in data["links"]:
            link["timeout"] = timeout
        data["profile_dirs"] = [str(self.tmp)]
        out = self.tmp / "run.yaml"
        out.write_text(yaml.safe_dump(data, sort_keys=False))
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


async def poll_for(config: Path, seconds: float, warmup: float = 3.0) -> dict[str, float]:
    bus = EventBus()
    counts = {"points": 0, "updates": 0, "errors": 0}

    def count(update: DeviceUpdate) -> None:
        counts["points"] += len(update.values)
        counts["errors"] += len(update.errors)
        counts["updates"] += 1

    bus.subscribe(DeviceUpdate, count)
    engine = Engine(bus)
    loaded = load_config(config)
    await engine.start(loaded)
    await asyncio.sleep(warmup)
    for key in counts:
        counts[key] = 0
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu, elapsed = cpu_seconds() - cpu0, time.perf_counter() - t0
    memory = rss_mb()
    states = engine.device_states()
    link_requests = sum(s.stats.counters.requests for s in engine.links.values())
    await engine.stop()
    points = counts["points"]
    return {
        "points_per_s": points / elapsed,
        "cpu_s_per_1000_points": 1000 * cpu / points if points else float("nan"),
        "cpu_load": cpu / elapsed,
        "rss_mb": memory,
        "errors": counts["errors"],
        "updates": counts["updates"],
        "online": states["online"],
        "devices": sum(states.values()),
        "requests": link_requests,
        "elapsed": elapsed,
    }


def tcp_site(name: str, devices: int, points: int) -> dict[str, Any]:
    return {
        "name": name,
        "profile_dirs": [],
        "links": [{"id": f"l{i}", "type": "modbus-tcp"} for i in range(devices)],
        "devices": [
            {"id": f"d{i}", "profile": f"bench-meter-{points}", "link": f"l{i}", "unit": 1, "behaviour": "static"}
            for i in range(devices)
        ],
    }


async def tcp_case(tmp: Path, devices: int, points: int, poll: float, seconds: float) -> dict[str, Any]:
    scenario = tcp_site(f"tcp{devices}x{points}", devices, points)
    scenario["profile_dirs"] = [str(tmp)]
    site = Site(tmp, scenario)
    try:
        result = await poll_for(site.config(poll), seconds)
    finally:
        site.stop()
    expected = devices * points / poll
    return {
        "case": f"{devices} devices x {points} float32 every {poll * 1000:g} ms (TCP)",
        "expected_points_per_s": expected,
        "delivery": result["points_per_s"] / expected,
        **result,
    }


async def serial_case(tmp: Path, baud: int, seconds: float) -> dict[str, Any]:
    # Four meters of 10 float32 (one 20-register read each) polled back to back on one wire-timed line.
    scenario = {
        "name": f"serial{baud}",
        "profile_dirs": [str(tmp)],
        "links": [{"id": "bus", "type": "modbus-rtu", "baudrate": baud, "parity": "E", "wire_timing": True}],
        "devices": [
            {"id": f"m{i}", "profile": "bench-meter-10", "link": "bus", "unit": i + 1, "behaviour": "static"}
            for i in range(4)
        ],
    }
    site = Site(tmp, scenario)
    try:
        result = await poll_for(site.config(0.01, timeout=0.5), seconds)
    finally:
        site.stop()
    achieved = result["updates"] / result["elapsed"]  # one read per update: transactions in the measured window
    formula = 1 / transaction_time(20, baud, "E", 1)
    return {
        "case": f"RTU {baud} 8E1, reads of 20 registers",
        "transactions_per_s": achieved,
        "formula_per_s": formula,
        "efficiency": achieved / formula,
        **result,
    }


async def main_async(seconds: float) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for n in (10, 40, 100):
            (tmp / f"bench-meter-{n}.yaml").write_text(profile(n))
        results.append(await tcp_case(tmp, 50, 100, 0.5, seconds))
        results.append(await tcp_case(tmp, 200, 100, 0.5, seconds))
        results.append(await tcp_case(tmp, 200, 40, 0.5, seconds))
        results.append(await tcp_case(tmp, 50, 100, 0.05, seconds))  # as fast as the emulators go
        for baud in (9600, 19200):
            results.append(await serial_case(tmp, baud, seconds))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per case (after warm-up)")
    args = parser.parse_args()
    results = asyncio.run(main_async(args.seconds))
    rows = [
        [
            r["case"],
            f"{r['points_per_s']:,.0f}",
            f"{r['delivery']:.1%}" if "delivery" in r else f"bus {r['efficiency']:.1%} of formula",
            f"{r['cpu_s_per_1000_points']:.4f}",
            f"{r['cpu_load']:.2f}",
            f"{r['rss_mb']:.1f}",
            r["errors"],
        ]
        for r in results
    ]
    headers = ["case", "points/s", "delivery", "gateway CPU s / 1000 points", "CPU load", "RSS MB", "errors"]
    report("engine_throughput", headers, rows, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
