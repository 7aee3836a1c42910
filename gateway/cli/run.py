"""`cityedge run -c FILE`: the gateway, until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.common.problems import ConfigError

if TYPE_CHECKING:
    from gateway.config.loader import LoadedConfig

LEVELS = ("debug", "info", "warning", "error")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for journald and log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the gateway")
    p.add_argument("-c", "--config", type=Path, required=True, metavar="FILE", help="the gateway configuration")
    p.add_argument("--log-level", choices=LEVELS, default="info", help="the least severe messages logged")
    p.add_argument(
        "--log-format", choices=["text", "json"], default="text", help="json: one object per line, for journald"
    )
    p.set_defaults(handler=run)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("pymodbus", "cityedge.mqtt.paho", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def load_checked(path: Path, *, here: bool = True) -> LoadedConfig:
    """The configuration as `run` would start it: loaded and resolved; with `here`, also what it needs of this
    machine: every secret readable, every profile directory there."""
    from gateway.config.loader import load_config, profile_dir_problems
    from gateway.north.mqtt import secret_problems

    loaded = load_config(path)
    if here:
        problems = [loaded.source.problem(exc.path, str(exc)) for exc in secret_problems(loaded.config.mqtt)]
        problems += profile_dir_problems(loaded)
        if problems:
            raise ConfigError(problems)
    return loaded


def run(args: argparse.Namespace) -> int:
    from gateway.app import Gateway
    from gateway.north.mqtt import SecretError

    setup_logging(args.log_level, args.log_format)
    loaded = load_checked(args.config)

    async def main() -> None:
        try:
            gateway = Gateway(args.config, loaded)
        except SecretError as exc:
            raise ConfigError([loaded.source.problem(exc.path, str(exc))]) from None
        await gateway.run()

    asyncio.run(main())
    return 0
