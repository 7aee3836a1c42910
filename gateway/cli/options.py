"""Option values every command reads the same way: addresses, ports, unit ids, durations.

Each parser turns a bad value into an argparse error (exit 2, one plain sentence), never
into a traceback or a library's message.
"""

from __future__ import annotations

import argparse

from gateway.cli.errors import UsageError
from gateway.common.types import parse_duration

MQTT_PORT = 1883


def address(option: str, given: str, default_port: int) -> tuple[str, int]:
    """(host, port) from HOST, HOST:PORT, [IPv6]:PORT or a bare IPv6 address; the default port when none is given."""
    text = given.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":") if sep and rest.startswith(":") else None
        if not sep or (rest and port_text is None):
            raise UsageError(f"{option} {given!r}: write an IPv6 address as [ADDRESS] or [ADDRESS]:PORT")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:  # a name, an IPv4 address, or an IPv6 address without brackets (so without a port)
        host, port_text = text, None
    if not host:
        raise UsageError(f"{option} {given!r}: a host name or address is missing")
    if port_text is None:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise UsageError(f"{option} {given!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def broker_address(given: str | None) -> str | None:
    """`--broker HOST[:PORT]` as HOST:PORT (port 1883 when none is given), the same in every command."""
    if given is None:
        return None
    host, port = address("--broker", given, MQTT_PORT)
    return f"{host}:{port}"


def _number(text: str, low: int, high: int, what: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{what} is {low}..{high}, not {value}")
    return value


def unit_id(text: str) -> int:
    """A Modbus unit id: 0..255 (a bus answers 1..247; checked against the link later)."""
    return _number(text, 0, 255, "a Modbus unit id")


def register_address(text: str) -> int:
    """A register or bit address on the wire, 0-based: 0..65535, decimal or 0x...."""
    return _number(text, 0, 65535, "a register address")


def positive_int(text: str) -> int:
    return _number(text, 1, 10_000_000, "the value")


def seconds(text: str) -> float:
    """A positive duration: seconds, or 500ms, 5s, 2m, as in the configuration."""
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be longer than 0")
    return value


def address_span(text: str) -> range:
    """FIRST-LAST (or one address) of M-Bus primary addresses, 0-250."""
    first, _, last = text.partition("-")
    try:
        low, high = int(first), int(last or first)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not FIRST-LAST, e.g. 1-20") from None
    if not 0 <= low <= high <= 250:
        raise argparse.ArgumentTypeError(f"{text!r}: primary addresses are 0-250, first to last")
    return range(low, high + 1)
