"""Outbox throughput: messages per second into the SQLite outbox, and replayed to mosquitto with QoS 1.

Run: .venv/bin/python bench/outbox_throughput.py [--messages 100000]   (or bench/run)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import report  # noqa: E402
from gateway.config.model import GatewayConfig  # noqa: E402
from gateway.north.message import Kind, Outgoing  # noqa: E402
from gateway.north.mqtt import MqttLink, gateway_session  # noqa: E402
from gateway.north.outbox import Outbox  # noqa: E402
from hil.broker import MosquittoBroker  # noqa: E402

PAYLOAD = json.dumps({"ts": 1795959231938, "values": {f"v{i}": 230.25 + i for i in range(10)}})


async def run(messages: int, sync: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, MosquittoBroker() as broker:
        config = GatewayConfig.model_validate(
            {
                "gateway": {"id": "bench"},
                "mqtt": {"port": broker.port},
                "store": {"path": f"{tmp}/outbox.db", "replay_rate": 1_000_000, "max_mb": 1024, "sync": sync},
            }
        )
        outbox = Outbox(config.store)
        outbox.start()
        start = time.perf_counter()
        for i in range(messages):  # the broker is not connected yet: an outage
            outbox.put(Outgoing(f"cityedge/bench/m{i % 50}/state", PAYLOAD.encode(), Kind.TELEMETRY, 1))
            if i % 1000 == 999:
                await asyncio.sleep(0)  # let the flusher run, as the engine would
        outbox.flush()
        stored = time.perf_counter() - start
        disk = outbox.disk_bytes()
        link = MqttLink(config.mqtt, outbox, gateway_session(config))
        start = time.perf_counter()
        link.start()
        while outbox.stats.sent < messages:
            await asyncio.sleep(0.01)
        replayed = time.perf_counter() - start
        await link.stop()
        await outbox.stop()
    return {
        "messages": messages,
        "sync": sync,
        "stored_per_s": round(messages / stored),
        "replayed_per_s": round(messages / replayed),
        "disk_mb": round(disk / 1e6, 1),
        "payload_bytes": len(PAYLOAD),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    results = [asyncio.run(run(args.messages, sync)) for sync in ("full", "normal")]
    report(
        "outbox_throughput",
        ["store.sync", "messages", "stored/s", "replayed/s (QoS 1, PUBACK)", "disk MB"],
        [
            [r["sync"], f"{r['messages']:,}", f"{r['stored_per_s']:,}", f"{r['replayed_per_s']:,}", r["disk_mb"]]
            for r in results
        ],
        results,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
