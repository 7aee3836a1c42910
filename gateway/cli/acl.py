"""`cityedge acl -c FILE`: print a mosquitto ACL that confines the gateway, its nodes and its operators."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gateway.config.loader import load_config
from gateway.north.acl import mosquitto_acl


def register(sub: Any) -> None:
    p = sub.add_parser("acl", help="print a mosquitto ACL file for this gateway, its nodes and operators")
    p.add_argument("-c", "--config", type=Path, required=True, metavar="FILE", help="the gateway configuration")
    p.add_argument("--operator", action="append", default=[], metavar="USER", help="may send commands (repeat)")
    p.add_argument("--viewer", action="append", default=[], metavar="USER", help="may only read (repeat)")
    p.add_argument("--technician", action="append", default=[], metavar="USER", help="may watch the nodes (repeat)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    print(mosquitto_acl(loaded.config, str(args.config), args.operator, args.viewer, args.technician), end="")
    return 0
