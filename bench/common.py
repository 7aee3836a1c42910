"""What the benchmarks share: a cabinet of three processes to measure, and the report at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from hil.broker import MosquittoBroker

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


def report(name: str, headers: Sequence[str], rows: Sequence[Sequence[object]], data: Any) -> None:
    """A Markdown table for the docs on stdout, the raw figures as JSON in bench/results/."""
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")


def meter_profile(points: int) -> str:
    return (
        f"name: bench-meter-{points}\nmanufacturer: CityEdge\nmodel: benchmark meter\n"
        f"description: {points} float32 input registers\nsource: synthetic\n"
        "defaults: {table: input, type: float32, byte_order: ABCD}\n"
        f"repeat:\n  - {{count: {points}, stride: 2, points: {{'v{{i}}': {{address: 0, initial: 230.5}}}}}}\n"
    )


@contextmanager
def cabinet(
    devices: int, *, gateway_tree: Path = ROOT, extra: dict[str, Any] | None = None
) -> Iterator[tuple[MosquittoBroker, subprocess.Popen[bytes]]]:
    """Three processes as in a street cabinet: emulated devices (`cityedge hil serve`), mosquitto,
    and the gateway (`cityedge run`, from `gateway_tree`, so two checkouts can be compared).

    `devices` meters of 100 float32 every 500 ms, each on its own TCP link, plus a 16-lamp DALI
    gateway (`lamps`); the gateway's MQTT base is `cityedge/latency`.
    """
    with tempfile.TemporaryDirectory() as tmpdir, MosquittoBroker() as broker:
        tmp = Path(tmpdir)
        (tmp / "bench-meter-100.yaml").write_text(meter_profile(100))
        lamps = {"id": "lamps", "profile": "dali-modbus-gateway", "link": "lamp-net", "unit": 1}
        meters = [
            {"id": f"m{i}", "profile": "bench-meter-100", "link": f"l{i}", "unit": 1, "behaviour": "static"}
            for i in range(devices)
        ]
        scenario = {
            "name": "latency",
            "profile_dirs": [str(tmp)],
            "links": [{"id": "lamp-net", "type": "modbus-tcp"}]
            + [{"id": f"l{i}", "type": "modbus-tcp"} for i in range(devices)],
            "devices": [{**lamps, "params": {"ballasts": 16}, "poll": 0.5}]
            + [{**meter, "poll": 0.5} for meter in meters],
        }
        (tmp / "site.yaml").write_text(yaml.safe_dump(scenario))
        serve = ["hil", "serve", str(tmp / "site.yaml"), "--json", "--no-timeline"]
        control = ["--control", str(tmp / "ctl.sock"), "--gateway-config", str(tmp / "gw.yaml")]
        site = subprocess.Popen(
            [sys.executable, "-m", "gateway", *serve, *control],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        gateway = None
        try:
            assert site.stdout is not None
            site.stdout.readline()  # the site is up
            config = yaml.safe_load((tmp / "gw.yaml").read_text())
            config["mqtt"] = {"host": broker.host, "port": broker.port}
            config["store"] = {"path": str(tmp / "outbox.db")}
            for device in config["devices"]:
                device["report"] = {"mode": "periodic"}
            config.update(extra or {})
            (tmp / "gw.yaml").write_text(yaml.safe_dump(config))
            run = ["run", "-c", str(tmp / "gw.yaml"), "--log-level", "warning"]
            gateway = subprocess.Popen([sys.executable, "-m", "gateway", *run], cwd=gateway_tree, env=os.environ.copy())
            yield broker, gateway
        finally:
            for proc in (gateway, site):
                if proc is not None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(20)
