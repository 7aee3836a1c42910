"""Wire-timed RTU emulation: measured transactions per second against the line formula (13 + 2N) characters + 2 x t3.5.

T = (13 + 2N) * 11 / baud + 2 * t3.5 per read of N registers (8E1: 11 bits per character).
Run: .venv/bin/python bench/wire_timing.py   (or bench/run for everything)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import serial
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import report  # noqa: E402
from hil.modbus.frames import with_crc  # noqa: E402
from hil.ptyline import transaction_time  # noqa: E402
from hil.site.emulated import Site  # noqa: E402
from hil.site.scenario import load_scenario  # noqa: E402

PROFILE = """
name: bench-block
manufacturer: CityEdge
model: benchmark register block
description: 125 holding registers
source: synthetic
defaults: {table: holding, type: uint16}
repeat:
  - {count: 125, stride: 1, points: {"r{i}": {address: 0}}}
"""


async def measure(path: str, registers: int, seconds: float) -> tuple[int, float]:
    """Transactions completed back to back in about `seconds` (bounded), and the time they took."""
    port = serial.Serial(path, 115200, timeout=0)
    loop = asyncio.get_running_loop()
    request = with_crc(bytes([1, 3, 0, 0, 0, registers]))
    want = 5 + 2 * registers
    got = bytearray()
    ready = asyncio.Event()

    def readable() -> None:
        got.extend(os.read(port.fileno(), 4096))
        if len(got) >= want:
            ready.set()

    loop.add_reader(port.fileno(), readable)
    count, start = 0, time.perf_counter()
    try:
        while time.perf_counter() - start < seconds and count < 10_000:
            got.clear()
            ready.clear()
            os.write(port.fileno(), request)
            await asyncio.wait_for(ready.wait(), 5)
            count += 1
        return count, time.perf_counter() - start
    finally:
        loop.remove_reader(port.fileno())
        port.close()


async def run(seconds: float) -> list[dict[str, float]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "bench-block.yaml").write_text(PROFILE)
        for baud in (9600, 19200):
            scenario = Path(tmp) / f"s{baud}.yaml"
            scenario.write_text(
                yaml.safe_dump(
                    {
                        "name": f"wire-{baud}",
                        "profile_dirs": [tmp],
                        "links": [
                            {"id": "bus", "type": "modbus-rtu", "baudrate": baud, "parity": "E", "wire_timing": True}
                        ],
                        "devices": [
                            {"id": "d", "profile": "bench-block", "link": "bus", "unit": 1, "behaviour": "static"}
                        ],
                    }
                )
            )
            site = Site(load_scenario(scenario))
            await site.start()
            try:
                for n in (2, 10, 125):
                    count, elapsed = await measure(site.endpoint_addresses()["bus"], n, seconds)
                    measured = count / elapsed
                    formula = 1 / transaction_time(n, baud, "E", 1)
                    rows.append(
                        {
                            "baud": baud,
                            "registers": n,
                            "measured_tps": round(measured, 2),
                            "formula_tps": round(formula, 2),
                            "ratio": round(measured / formula, 3),
                        }
                    )
            finally:
                await site.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per case")
    args = parser.parse_args()
    rows = asyncio.run(run(args.seconds))
    report(
        "wire_timing",
        ["baud", "N", "measured tx/s", "formula tx/s", "measured / formula"],
        [[r["baud"], r["registers"], r["measured_tps"], r["formula_tps"], f"{r['ratio']:.3f}"] for r in rows],
        rows,
    )
    return 0 if all(0.9 <= r["ratio"] <= 1.1 for r in rows) else 1  # the 90 % target, as an exit status


if __name__ == "__main__":
    raise SystemExit(main())
