"""`cityedge demo`: a whole city block on this machine, in one command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from gateway.cli.errors import HIL_EXTRA, needs
from gateway.cli.options import broker_address, seconds


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run an emulated city block with the gateway (Ctrl-C stops it)")
    p.add_argument("--duration", type=seconds, metavar="SECONDS", help="stop after this long")
    p.add_argument("--faults", action="store_true", help="inject faults on a timeline, to watch recovery")
    p.add_argument("--broker", metavar="HOST[:PORT]", help="use this broker instead of starting mosquitto")
    p.add_argument("--no-table", action="store_true", help="no live status table")
    p.set_defaults(handler=needs(HIL_EXTRA, run))


def run(args: argparse.Namespace) -> int:
    from hil.site.demo import run_demo

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for quiet in ("pymodbus", "cityedge.mqtt.paho", "mqtt"):
        logging.getLogger(quiet).setLevel(logging.CRITICAL)

    async def main() -> int:
        task = asyncio.create_task(run_demo(args.duration, args.faults, broker_address(args.broker), not args.no_table))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            print("\ndemo stopped", file=sys.stderr)
            return 0

    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(main())
    return 0
