"""MQTT set -> device write -> set/result latency while the gateway polls under load, and poll-to-MQTT latency.

Three processes, as in a cabinet: emulated devices (`cityedge hil serve`), mosquitto, and
the gateway (`cityedge run`). A client sends commands one after another and times
each result; it also compares each state message's `ts` (stamped when the poll cycle
finished) with the moment the message arrives.

Run: .venv/bin/python bench/command_latency.py [--commands 300]   (or bench/run)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cabinet, report  # noqa: E402
from hil.broker import MosquittoBroker  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(broker: MosquittoBroker, base: str, commands: int) -> dict[str, Any]:
    latencies: list[float] = []
    delivery: list[float] = []
    pending: dict[str, float] = {}
    done = asyncio.Event()
    nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    async with aiomqtt.Client(broker.host, broker.port, identifier="bench-client", socket_options=nodelay) as client:
        await client.subscribe(f"{base}/lamps/set/result", qos=1)
        await client.subscribe(f"{base}/+/state", qos=0)

        async def reader() -> None:
            async for message in client.messages:
                now = time.perf_counter()
                data = json.loads(message.payload)  # type: ignore[arg-type]
                if str(message.topic).endswith("/state"):
                    delivery.append(time.time() * 1000 - data["ts"])
                elif data.get("transaction") in pending:
                    assert data["status"] == "ok", data
                    latencies.append(now - pending.pop(data["transaction"]))
                    if len(latencies) == commands:
                        done.set()

        task = asyncio.create_task(reader())
        await asyncio.sleep(5)  # warm-up: every device polled a few times
        delivery.clear()
        for i in range(commands):
            transaction = f"b{i}"
            body = json.dumps({"transaction": transaction, "values": {"ballast_0_arc_power": i % 100}})
            pending[transaction] = time.perf_counter()
            await client.publish(f"{base}/lamps/set", body, qos=1)
            while transaction in pending:
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.02)
        await asyncio.wait_for(done.wait(), 30)
        task.cancel()
    ms = [1000 * x for x in latencies]
    return {
        "commands": len(ms),
        "set_result_p50_ms": round(percentile(ms, 0.5), 2),
        "set_result_p99_ms": round(percentile(ms, 0.99), 2),
        "set_result_max_ms": round(max(ms), 2),
        "state_messages": len(delivery),
        "poll_to_mqtt_p50_ms": round(statistics.median(delivery), 2),
        "poll_to_mqtt_p99_ms": round(percentile(delivery, 0.99), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=int, default=300)
    parser.add_argument("--devices", type=int, default=50)
    args = parser.parse_args()
    with cabinet(args.devices) as (broker, _gateway):
        result = asyncio.run(measure(broker, "cityedge/latency", args.commands))
    load = f"{args.devices} devices x 100 float32 every 500 ms + 16 lamps, polled over TCP"
    print(f"load: {load}")
    report("command_latency", ["measure", "value"], [[k, v] for k, v in result.items()], {"load": load, **result})
    return 0 if result["set_result_p99_ms"] < 50 else 1


if __name__ == "__main__":
    raise SystemExit(main())
