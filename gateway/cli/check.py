"""`cityedge check -c FILE`: validate a gateway configuration and everything it refers to."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gateway.cli.run import load_checked
from gateway.common.problems import ConfigError, Problem, format_path
from gateway.config.loader import LoadedConfig
from gateway.config.model import DeviceConfig
from gateway.north.mqtt import security_warnings
from gateway.south.driver import link_driver


def register(sub: Any) -> None:
    p = sub.add_parser("check", help="validate a configuration file (all problems, with file:line:col)")
    p.add_argument("-c", "--config", type=Path, required=True, metavar="FILE", help="the gateway configuration")
    p.add_argument("--json", action="store_true", help="print the result (or the problems) as JSON")
    p.add_argument(
        "--portable",
        action="store_true",
        help="the file is for another machine: skip what only that machine has (TLS files, the password, "
        "profile directories); without it, check refuses all that run would refuse here",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        loaded = load_checked(args.config, here=not args.portable)
    except ConfigError as exc:
        if not args.json:
            raise
        print(json.dumps({"ok": False, "problems": [_problem(p) for p in exc.problems]}, indent=2))
        return 2
    if args.json:
        print(json.dumps(report(loaded), indent=2))
    else:
        print(summary(loaded))
    return 0


def _problem(p: Problem) -> dict[str, Any]:
    return {"file": p.file, "line": p.line, "column": p.column, "key": format_path(p.path), "message": p.message}


def report(loaded: LoadedConfig) -> dict[str, Any]:
    """What `check --json` prints for a configuration that loads: the same facts as the summary."""
    cfg = loaded.config
    return {
        "ok": True,
        "file": str(loaded.path),
        "gateway": {"id": cfg.gateway.id, "site": cfg.gateway.site},
        "mqtt": {"host": cfg.mqtt.host, "port": cfg.mqtt.port, "base_topic": cfg.base_topic, "tls": bool(cfg.mqtt.tls)},
        "links": [
            {"id": link.id, "type": link.type, "where": link_driver(link).describe_link(link)} for link in cfg.links
        ],
        "devices": [
            {
                "id": d.id,
                "profile": d.profile,
                "link": d.link,
                **({"unit": d.unit} if d.unit is not None else {"address": d.address}),
                "points": len(loaded.devices[d.id].points),
                "poll_s": d.poll,
                "enabled": d.enabled,
            }
            for d in cfg.devices
        ],
        "nodes": [{"id": n.id, "profile": n.profile, "stale_after_s": n.stale_after} for n in cfg.nodes],
        "points": loaded.point_count,
        "warnings": security_warnings(cfg.mqtt),
    }


def summary(loaded: LoadedConfig) -> str:
    cfg = loaded.config
    gw = cfg.gateway
    lines = [f"{loaded.path}: OK"]
    lines.append(
        f"  gateway  {gw.id}{f' ({gw.site})' if gw.site else ''}, MQTT {cfg.mqtt.host}:{cfg.mqtt.port} "
        f"under {cfg.base_topic}{' with TLS' if cfg.mqtt.tls else ''}"
    )
    lines.append(f"  links    {len(cfg.links)}")
    for link in cfg.links:
        lines.append(f"    {link.id:<16} {link_driver(link).describe_link(link)}")
    lines.append(f"  devices  {len(cfg.devices)} with {loaded.point_count} points")
    for device in cfg.devices:
        count = len(loaded.devices[device.id].points)
        state = "" if device.enabled else "  (disabled)"
        lines.append(
            f"    {device.id:<16} {device.profile} on {device.link} {_address(device)}, "
            f"{count} points every {device.poll:g}s{state}"
        )
    lines.append(f"  nodes    {len(cfg.nodes)}")
    for node in cfg.nodes:
        lines.append(f"    {node.id:<16} {node.profile}, offline after {node.stale_after:g}s silent")
    lines += [f"  warning: {warning}" for warning in security_warnings(cfg.mqtt)]
    return "\n".join(lines)


def _address(device: DeviceConfig) -> str:
    if device.unit is not None:
        return f"unit {device.unit}"
    return f"address {device.address}" if device.address not in (None, "") else "(the only device on its port)"
