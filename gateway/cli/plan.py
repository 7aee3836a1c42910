"""`cityedge plan -c FILE [--device ID] [--json]`: the reads each device costs per cycle."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gateway.cli.errors import UsageError
from gateway.common.problems import did_you_mean
from gateway.config.loader import load_config
from gateway.core.device import Device


def register(sub: Any) -> None:
    p = sub.add_parser("plan", help="print the read plan: requests per device and the points they carry")
    p.add_argument("-c", "--config", type=Path, required=True, metavar="FILE")
    p.add_argument("--device", action="append", metavar="ID", help="only this device (may repeat)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run)


def device_plan(device: Device) -> dict[str, Any]:
    groups = []
    for group in device.groups:
        requests = [
            {
                "unit": device.unit,
                "function": r.function,
                "table": r.table.value,
                "start": r.start,
                "count": r.count,
                "points": [p.name for p, _ in r.points],
            }
            for r in group.plan
        ]
        groups.append(
            {"group": group.name, "interval": group.interval, "requests": requests, "points": len(group.points)}
        )
    return {
        "device": device.id,
        "profile": device.resolved.name,
        "unit": device.unit,
        "groups": groups,
        "requests": sum(len(g.plan) for g in device.groups),
        "points": sum(len(g.points) for g in device.groups),
    }


def run(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    config = loaded.config
    wanted = args.device or [d.id for d in config.devices]
    known = {d.id for d in config.devices}
    for device_id in wanted:
        if device_id not in known:
            raise UsageError(f"no device '{device_id}' in {args.config}{did_you_mean(device_id, known)}")
    timeouts = {link.id: link.timeout for link in config.links}
    plans = [device_plan(Device(d, loaded.devices[d.id], timeouts[d.link])) for d in config.devices if d.id in wanted]
    if args.json:
        print(json.dumps(plans, indent=2))
        return 0
    links = {d.id: d.link for d in config.devices}
    for plan in plans:
        print(f"{plan['device']}: {plan['profile']} on {links[plan['device']]} unit {plan['unit']}")
        for group in plan["groups"]:
            label = f" (group {group['group']})" if group["group"] != "default" else ""
            print(f"  every {group['interval']:g}s{label}")
            print("    #  FC  TABLE     START  COUNT  POINTS")
            for i, r in enumerate(group["requests"], 1):
                names = r["points"]
                shown = " ".join(names[:4]) + (f" ... ({len(names)} points)" if len(names) > 4 else "")
                print(f"    {i:<2} {r['function']:02d}  {r['table']:<8}  {r['start']:<5}  {r['count']:<5}  {shown}")
        print(
            f"  {plan['requests']} requests per cycle for {plan['points']} points "
            f"(one request per point would be {plan['points']})\n"
        )
    total_requests = sum(p["requests"] for p in plans)
    total_points = sum(p["points"] for p in plans)
    print(f"total: {total_requests} requests per cycle for {total_points} points")
    return 0
