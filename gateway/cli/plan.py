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
from gateway.south.driver import link_driver


def register(sub: Any) -> None:
    p = sub.add_parser("plan", help="print the read plan: requests per device and the points they carry")
    p.add_argument("-c", "--config", type=Path, required=True, metavar="FILE", help="the gateway configuration")
    p.add_argument("--device", action="append", metavar="ID", help="only this device (may repeat)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=run)


BUSY = 0.8  # a bus busier than this has little room left for retries and timeouts


def device_plan(device: Device, link: Any = None) -> dict[str, Any]:
    groups = []
    for group in device.groups:
        times = [device.driver.wire_time(link, device, r) for r in group.plan] if link is not None else []
        bus = sum(t for t in times if t is not None) if times and None not in times else None
        groups.append(
            {
                "group": group.name,
                "interval": group.interval,
                "requests": [device.driver.describe_request(device, r) for r in group.plan],
                "points": len(group.points),
                **({"bus_time_s": round(bus, 6)} if bus is not None else {}),
            }
        )
    return {
        "device": device.id,
        "profile": device.resolved.name,
        **device.describe(),
        "groups": groups,
        "requests": sum(len(g.plan) for g in device.groups),
        "points": sum(len(g.points) for g in device.groups),
    }


def link_loads(plans: list[dict[str, Any]]) -> dict[str, float]:
    """Per link with known wire times: the share of each second its devices' polls keep the bus busy."""
    loads: dict[str, float] = {}
    for plan in plans:
        for group in plan["groups"]:
            if "bus_time_s" in group:
                loads[plan["link"]] = loads.get(plan["link"], 0.0) + group["bus_time_s"] / group["interval"]
    return loads


def load_warnings(loads: dict[str, float], links: dict[str, Any]) -> list[str]:
    said = []
    for link_id, load in loads.items():
        where = link_driver(links[link_id]).describe_link(links[link_id])
        if load >= 1:
            said.append(
                f"link {link_id} ({where}) needs {load:.2f} s of bus time per second: its devices cannot all be "
                "polled at their intervals (polls will be skipped, see overruns); poll less often, move devices "
                "to another line, or raise the baud rate"
            )
        elif load >= BUSY:
            said.append(
                f"link {link_id} ({where}) is busy {load:.0%} of the time: little room is left for retries and timeouts"
            )
    return said


_HEADINGS = {"function": "FC"}


def run(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    config = loaded.config
    wanted = args.device or [d.id for d in config.devices]
    known = {d.id for d in config.devices}
    for device_id in wanted:
        if device_id not in known:
            raise UsageError(f"no device '{device_id}' in {args.config}{did_you_mean(device_id, known)}")
    links = {link.id: link for link in config.links}
    chosen = [d for d in config.devices if d.id in wanted]
    devices = [Device.on_link(d, loaded.devices[d.id], links[d.link]) for d in chosen]
    plans = [device_plan(device, links[d.link]) for device, d in zip(devices, chosen, strict=True)]
    loads = link_loads(plans)
    warnings = load_warnings(loads, links)
    if args.json:
        summary = {k: {"bus_busy": round(v, 4)} for k, v in loads.items()}
        print(json.dumps({"devices": plans, "links": summary, "warnings": warnings}, indent=2))
        return 0
    for device, plan in zip(devices, plans, strict=True):
        where = " ".join(f"{k} {plan[k]}" for k in ("unit", "address") if k in plan)
        print(f"{plan['device']}: {plan['profile']} on {plan['link']} {where}".rstrip())
        columns = device.driver.plan_columns()
        for group in plan["groups"]:
            label = f" (group {group['group']})" if group["group"] != "default" else ""
            bus = f", {1000 * group['bus_time_s']:.1f} ms of bus time" if "bus_time_s" in group else ""
            print(f"  every {group['interval']:g}s{label}{bus}")
            rows = [
                [str(i), *(device.driver.plan_cell(c, r[c]) for c in columns), _points(r["points"])]
                for i, r in enumerate(group["requests"], 1)
            ]
            print(_table(["#", *(_HEADINGS.get(c, c.upper()) for c in columns), "POINTS"], rows))
        print(
            f"  {plan['requests']} requests per cycle for {plan['points']} points "
            f"(one request per point would be {plan['points']})\n"
        )
    total_requests = sum(p["requests"] for p in plans)
    total_points = sum(p["points"] for p in plans)
    print(f"total: {total_requests} requests per cycle for {total_points} points")
    for link_id, load in loads.items():
        print(f"  {link_id}: the bus is busy {load:.0%} of the time ({1000 * load:.0f} ms of every second)")
    for warning in warnings:
        print(f"warning: {warning}")
    return 0


def _points(names: list[str]) -> str:
    return " ".join(names[:4]) + (f" ... ({len(names)} points)" if len(names) > 4 else "")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(["    " + line for line in lines])
