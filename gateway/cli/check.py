"""`cityedge check -c FILE`: validate a gateway configuration and everything it refers to."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, get_args

from gateway.cli.run import load_checked
from gateway.common.problems import ConfigError, Problem, format_path
from gateway.common.types import format_duration
from gateway.config.loader import LoadedConfig
from gateway.config.model import DeviceConfig, GatewayConfig
from gateway.edge.alarms.rules import AlarmRule, Severity, site_rules
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
        **_automation_report(loaded),
        "warnings": security_warnings(cfg.mqtt),
    }


def _rule_json(rule: AlarmRule, shipped: bool) -> dict[str, Any]:
    return {"id": rule.id, "device": rule.device, "severity": rule.severity, "condition": rule.condition(),
            "shipped": shipped}  # fmt: skip


def _automation_report(loaded: LoadedConfig) -> dict[str, Any]:
    """What the file makes the gateway do on its own, and where it listens for operators."""
    cfg = loaded.config
    configured, shipped = site_rules(loaded)
    out: dict[str, Any] = {
        "alarms": [_rule_json(r, False) for r in configured] + [_rule_json(r, True) for r in shipped],
        "lighting": None,
        "indicators": None,
        "web": _web(cfg),
    }
    if cfg.lighting is not None:
        site = cfg.lighting.site
        out["lighting"] = {
            "site": {"latitude": site.latitude, "longitude": site.longitude, "timezone": site.timezone},
            "programs": sorted(cfg.lighting.programs),
            "default_program": cfg.lighting.calendar.default,
            "targets": [
                {"id": t.id, "device": t.device, "point": t.point, "feeder": t.feeder} for t in cfg.lighting.targets
            ],
        }
    if cfg.indicators is not None:
        ind = cfg.indicators
        out["indicators"] = {"groups": sorted(ind.groups), "feeders": sorted(ind.feeders), "levels": sorted(ind.levels),
                             "interval_s": ind.interval}  # fmt: skip
    return out


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _web(cfg: GatewayConfig) -> dict[str, str]:
    """The operators' window: where the metrics endpoint and the dashboard will listen."""
    web = {}
    for name, settings, path in (("metrics", cfg.metrics, "/metrics"), ("dashboard", cfg.dashboard, "/")):
        if settings is not None:
            scheme = "https" if settings.tls else "http"
            host = f"[{settings.host}]" if ":" in settings.host else settings.host
            web[name] = f"{scheme}://{host}:{settings.port}{path}"
    return web


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
    lines += _automation_summary(loaded)
    lines += [f"  warning: {warning}" for warning in security_warnings(cfg.mqtt)]
    return "\n".join(lines)


def _automation_summary(loaded: LoadedConfig) -> list[str]:
    """Lighting, alarms, indicators and the operators' window, in the summary's shape."""
    cfg = loaded.config
    lines = []
    if cfg.lighting is not None:
        lighting = cfg.lighting
        site = lighting.site
        where = f"{site.timezone} at {site.latitude:g}, {site.longitude:g}"
        lines.append(
            f"  lighting {_count(len(lighting.targets), 'target')}, {where}; "
            f"programs {', '.join(sorted(lighting.programs))} (default {lighting.calendar.default})"
        )
        for t in lighting.targets:
            extra = [f"feeder {t.feeder}"] if t.feeder else []
            if t.photocell is not None:
                extra.append(f"photocell {t.photocell.device}.{t.photocell.point}")
            if t.motion is not None:
                extra.append(f"motion {t.motion.device}.{t.motion.point}")
            lines.append(f"    {t.id:<16} {t.device}.{t.point}" + (f" ({', '.join(extra)})" if extra else ""))
    configured, shipped = site_rules(loaded)
    if configured or shipped:
        rules = configured + shipped
        by = ", ".join(f"{n} {s}" for s in get_args(Severity) if (n := sum(r.severity == s for r in rules)))
        lines.append(f"  alarms   {len(rules)}: {len(configured)} configured, {len(shipped)} from profiles ({by})")
        for rule in configured:
            lines.append(f"    {rule.id:<16} {rule.severity:<8} {rule.condition()}")
        per_device: dict[str, list[AlarmRule]] = {}
        for rule in shipped:
            per_device.setdefault(rule.device, []).append(rule)
        for device, its in per_device.items():
            kinds = sorted({r.id.removeprefix(device + ".").split(".")[0] for r in its})
            lines.append(f"    {device:<16} {len(its)} from its profile: {', '.join(kinds)}")
    if cfg.indicators is not None:
        ind = cfg.indicators
        sizes = ((len(ind.groups), "lamp group"), (len(ind.feeders), "feeder"), (len(ind.levels), "level"))
        counts = ", ".join(_count(n, what) for n, what in sizes if n)
        lines.append(f"  indicators every {format_duration(ind.interval)}: {counts or 'nothing to count'}")
    for name, url in _web(cfg).items():
        local = " (this machine only)" if getattr(cfg, name).host in ("127.0.0.1", "localhost", "::1") else ""
        lines.append(f"  {name:<8} {url}{local}")
    return lines


def _address(device: DeviceConfig) -> str:
    if device.unit is not None:
        return f"unit {device.unit}"
    return f"address {device.address}" if device.address not in (None, "") else "(the only device on its port)"
