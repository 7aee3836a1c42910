"""The whole gateway measured from outside: resident memory and CPU of the `cityedge run` process.

Three processes as in a cabinet (emulated devices, mosquitto, the gateway); the gateway
polls 50 meters x 100 float32 every 500 ms plus a 16-lamp DALI gateway over TCP and
publishes every cycle. After a warm-up, its CPU time (from /proc/<pid>/stat) is taken over
the measured window and divided by the points that reached a subscriber; its resident set
(VmRSS and VmHWM from /proc/<pid>/status) is read at the end.

`--tree DIR` runs the gateway from another checkout (with this checkout's emulators and
broker), so two versions can be compared side by side on the same machine.

Run: .venv/bin/python bench/gateway_footprint.py [--seconds 30] [--tree DIR]   (or bench/run)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cabinet, report  # noqa: E402
from hil.broker import MosquittoBroker  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
# Lighting as heavy as a cabinet makes it: every ballast a target with a photocell on a meter that is polled twice a
# second, so the controller wakes and decides all sixteen on every poll (a real photocell reports far less often).
LIGHTING = {
    "site": {"latitude": 41.3874, "longitude": 2.1686, "timezone": "Europe/Madrid"},
    "programs": {"night": [{"at": "sunset+10m", "level": 100}, {"at": "00:30", "level": 50},
                           {"at": "sunrise-15m", "level": 0}]},
    "calendar": {"default": "night"},
    "targets": [
        {"id": f"b{i}", "device": "lamps", "point": f"ballast_{i}_arc_power", "feeder": "f1",
         "photocell": {"device": "m0", "point": "v0", "on_below": 20, "off_above": 40}}
        for i in range(16)
    ],
}  # fmt: skip


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14 and 15 of stat(5))


def memory_mb(pid: int) -> dict[str, float]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return {"rss_mb": round(found["VmRSS"], 2), "peak_rss_mb": round(found["VmHWM"], 2)}


async def measure(broker: MosquittoBroker, pid: int, warmup: float, seconds: float) -> dict[str, Any]:
    points = 0
    async with aiomqtt.Client(broker.host, broker.port, identifier="bench-footprint") as client:
        await client.subscribe("cityedge/latency/+/state", qos=0)

        async def count() -> None:
            nonlocal points
            async for message in client.messages:
                points += len(json.loads(message.payload)["values"])  # type: ignore[arg-type]

        task = asyncio.create_task(count())
        await asyncio.sleep(warmup)
        points, cpu0, t0 = 0, cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(seconds)
        delivered, cpu, elapsed = points, cpu_seconds(pid) - cpu0, time.monotonic() - t0
        task.cancel()
    return {
        "points_per_s": round(delivered / elapsed),
        "cpu_s_per_1000_points": round(1000 * cpu / max(delivered, 1), 5),
        "cpu_load": round(cpu / elapsed, 3),
        **memory_mb(pid),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout whose gateway runs (default: this one)")
    parser.add_argument(
        "--lighting", action="store_true", help="with lighting programs on: 16 ballasts, each with a photocell"
    )
    args = parser.parse_args()
    extra = {"lighting": LIGHTING} if args.lighting else None
    with cabinet(args.devices, gateway_tree=args.tree.resolve(), extra=extra) as (broker, gateway):
        result = asyncio.run(measure(broker, gateway.pid, args.warmup, args.seconds))
    load = f"{args.devices} devices x 100 float32 every 500 ms + 16 lamps, polled over TCP"
    if args.lighting:
        load += "; lighting on: 16 targets, each watching a photocell on m0 (every poll of m0 wakes the controller)"
    print(f"load: {load}; gateway from {args.tree}")
    report("gateway_footprint", ["measure", "value"], list(result.items()), {"load": load, **result})
    return 0 if result["points_per_s"] > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
