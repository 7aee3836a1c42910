"""`cityedge check -c FILE`: validate a gateway configuration and everything it refers to."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gateway.config.loader import LoadedConfig, load_config
from gateway.config.model import DeviceConfig
from gateway.north.mqtt import security_warnings
from gateway.south.driver import link_driver


def register(sub: Any) -> None:
    p = sub.add_parser("check", help="validate a configuration file (all problems, with file:line:col)")
    p.add_argument("-c", "--config", type=Path, required=True, metavar="FILE")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    print(summary(loaded))
    return 0


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
    return f"unit {device.unit}" if device.unit is not None else f"address {device.address}"
