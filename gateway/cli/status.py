"""`cityedge status`: what a running gateway says of itself on its broker, in one screen (or as JSON).

It reads what the gateway keeps retained: `<base>/status`, `<base>/health`, `<base>/devices`,
every `<base>/<device>/health` and the alarm list `<base>/alarms`, collected until the broker
has sent them all. The same state the dashboard and the metrics read, for an operator with
only a terminal.

Exit 0: the gateway is online; 1: it is offline or nothing was heard from it; 2: bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.cli.errors import UsageError
from gateway.cli.options import MQTT_PORT, address, seconds
from gateway.common.problems import format_path
from gateway.core.inputs import InputError, parse_json
from gateway.core.supervision import printable

QUIET = 0.3  # seconds without a new retained message: the broker has sent them all
MAX_MESSAGE = 1024 * 1024  # bytes, as the gateway's own session takes


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="a running gateway at a glance: status, devices by state and why, outbox")
    p.add_argument("-c", "--config", type=Path, metavar="FILE", help="the gateway's configuration (broker, base)")
    p.add_argument("--broker", metavar="HOST[:PORT]", help="the broker (default: the configuration's)")
    p.add_argument("--base", metavar="TOPIC", help="the gateway's base topic, e.g. cityedge/cabinet-17")
    p.add_argument("--broker-user", metavar="USER", help="broker user (default: the configuration's)")
    p.add_argument("--broker-password-env", metavar="VAR", help="environment variable with the broker password")
    p.add_argument("--tls-ca", type=Path, metavar="FILE", help="connect with TLS, trusting this CA")
    p.add_argument("--timeout", type=seconds, default=5.0, metavar="SECONDS", help="how long to wait for the broker")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=run)


@dataclass
class Seen:
    status: dict[str, Any] | None = None
    health: dict[str, Any] | None = None
    devices: list[dict[str, Any]] = field(default_factory=list)
    device_health: dict[str, dict[str, Any]] = field(default_factory=dict)
    alarms: list[dict[str, Any]] | None = None  # None: the gateway keeps no alarm list (no rules)
    unreadable: int = 0


def _connection(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """aiomqtt.Client keyword arguments and the base topic, from the configuration and the options."""
    kwargs: dict[str, Any] = {}
    base = args.base
    if args.config is not None:
        from gateway.config.loader import load_config
        from gateway.north.mqtt import SecretError, read_password, tls_context

        loaded = load_config(args.config)
        mqtt = loaded.config.mqtt
        base = base or loaded.config.base_topic
        kwargs.update(hostname=mqtt.host, port=mqtt.port, username=mqtt.username)
        try:
            kwargs.update(password=read_password(mqtt), tls_context=tls_context(mqtt))
        except SecretError as exc:
            raise UsageError(f"{args.config}: {format_path(exc.path)}: {exc}") from None
    if args.broker:
        host, port = address("--broker", args.broker, 8883 if args.tls_ca else MQTT_PORT)
        kwargs.update(hostname=host, port=port)
    if "hostname" not in kwargs:
        raise UsageError("status needs -c FILE (the gateway's configuration) or --broker HOST[:PORT] and --base")
    if not base:
        raise UsageError("status needs the gateway's base topic: -c FILE or --base cityedge/<gateway id>")
    if args.broker_user:
        kwargs["username"] = args.broker_user
    if args.broker_password_env:
        password = os.environ.get(args.broker_password_env)
        if password is None:
            raise UsageError(f"--broker-password-env {args.broker_password_env}: that variable is not set")
        kwargs["password"] = password
    if args.tls_ca:
        kwargs["tls_context"] = ssl.create_default_context(cafile=str(args.tls_ca))
    return kwargs, base


async def collect(kwargs: dict[str, Any], base: str, timeout: float) -> Seen:
    """The retained state of the gateway under `base`; what arrived within `timeout` if the broker is slow."""
    import aiomqtt

    seen = Seen()
    loop = asyncio.get_running_loop()
    identifier = f"cityedge-status-{uuid.uuid4().hex[:8]}"
    from gateway.north.mqtt_client import connection

    async with connection(aiomqtt.Client(**kwargs, identifier=identifier, timeout=timeout)) as client:
        for topic in ("status", "health", "devices", "+/health", "alarms"):
            await client.subscribe(f"{base}/{topic}", qos=1)
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            wait = QUIET if seen.status and seen.health else deadline - loop.time()
            try:
                message = await asyncio.wait_for(anext(client.messages), wait)
            except TimeoutError:
                break
            _take(seen, base, str(message.topic), message.payload)
    return seen


def _take(seen: Seen, base: str, topic: str, payload: Any) -> None:
    raw = payload if isinstance(payload, bytes | bytearray | str) else str(payload)
    try:
        data = parse_json(raw, max_bytes=MAX_MESSAGE)
    except InputError:
        seen.unreadable += 1  # a retained message nobody can use: said, never trusted, never a crash
        return
    rest = topic[len(base) + 1 :]
    if rest == "status" and isinstance(data, dict):
        seen.status = data
    elif rest == "health" and isinstance(data, dict):
        seen.health = data
    elif rest == "devices" and isinstance(data, list):
        seen.devices = [d for d in data if isinstance(d, dict)]
    elif rest.endswith("/health") and isinstance(data, dict):
        seen.device_health[rest[: -len("/health")]] = data
    elif rest == "alarms" and isinstance(data, list):
        seen.alarms = [_alarm(a) for a in data if isinstance(a, dict) and isinstance(a.get("id"), str)]


SEVERITIES = ("critical", "major", "minor", "warning")  # the alarm rules' (not imported: status stays light)


def _alarm(a: dict[str, Any]) -> dict[str, Any]:
    """One entry of the retained list, as text and flags only (a hostile retained list is shown, not trusted)."""

    def text(key: str) -> str | None:
        value = a.get(key)
        return printable(value) if isinstance(value, str) else None  # no terminal control from anybody's message

    severity = text("severity")
    return {
        "id": printable(a["id"], 64),
        "severity": severity if severity in SEVERITIES else "unknown",
        "message": text("message"),
        "device": text("device"),
        "active": a.get("active") is True,
        "raised": text("raised"),
        "acked_by": text("acked_by"),
        "shelved_until": text("shelved_until"),
    }


def report(seen: Seen, base: str) -> dict[str, Any]:
    health = seen.health or {}
    devices = []
    named: list[str] = [d["id"] for d in seen.devices if isinstance(d.get("id"), str)]
    listed = list(dict.fromkeys([*named, *sorted(seen.device_health)]))  # the list's order, then any it lacks
    for device_id in listed:
        h = seen.device_health.get(device_id, {})
        devices.append(
            {
                "id": device_id,
                "state": h.get("state", "unknown"),
                "reason": h.get("reason"),
                "since": h.get("since"),
                "consecutive_failures": h.get("consecutive_failures"),
            }
        )
    by_state: dict[str, int] = {}
    for d in devices:
        by_state[d["state"]] = by_state.get(d["state"], 0) + 1
    return {
        "base": base,
        "state": (seen.status or {}).get("state", "unknown"),
        "version": health.get("version"),
        "uptime_s": health.get("uptime_s"),
        "devices": by_state,
        "attention": [d for d in devices if d["state"] != "online"],
        "outbox": health.get("outbox"),
        "mqtt": health.get("mqtt"),
        "links": health.get("links"),
        "alarms": seen.alarms,
        "all_devices": devices,
        "unreadable_messages": seen.unreadable,
    }


def _ago(ms: Any) -> str:
    if not isinstance(ms, int | float):
        return ""
    return f", for {_duration(time.time() - ms / 1000)}"


def _duration(value: float) -> str:
    value = max(0, int(value))
    days, rest = divmod(value, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def render(r: dict[str, Any]) -> str:
    up = f", up {_duration(r['uptime_s'])}" if isinstance(r["uptime_s"], int | float) else ""
    version = f", version {r['version']}" if r["version"] else ""
    lines = [f"{r['base']}: {r['state']}{up}{version}"]
    counts = r["devices"]
    order = ("online", "degraded", "offline", "unknown")
    shown = ", ".join(f"{counts[s]} {s}" for s in order if counts.get(s)) or "none"
    lines.append(f"  devices  {shown}")
    if r["unreadable_messages"]:
        lines.append(f"  warning  {r['unreadable_messages']} retained message(s) under {r['base']} could not be read")
    width = max((len(d["id"]) for d in r["attention"]), default=0)
    for d in r["attention"]:
        reason = d["reason"] or "no reason given"
        lines.append(f"    {d['id']:<{width}}  {d['state']:<8}  {reason}{_ago(d['since'])}")
    lines += _alarm_lines(r["alarms"])
    outbox = r["outbox"]
    if isinstance(outbox, dict):
        dropped = sum(outbox.get("dropped", {}).values()) if isinstance(outbox.get("dropped"), dict) else 0
        oldest = outbox.get("oldest_age_s") or 0
        age = f", oldest {_duration(oldest)} old" if oldest else ""
        lines.append(f"  outbox   {outbox.get('depth', 0)} waiting{age}, {dropped} dropped, mode {outbox.get('mode')}")
    return "\n".join(lines)


def _alarm_lines(alarms: list[dict[str, Any]] | None) -> list[str]:
    """Active alarms (most severe first, as the gateway lists them), and those cleared but not acknowledged."""
    if alarms is None:
        return []
    active = [a for a in alarms if a["active"]]
    waiting = len(alarms) - len(active)
    counts = ", ".join(f"{n} {s}" for s in (*SEVERITIES, "unknown") if (n := sum(a["severity"] == s for a in active)))
    head = f"{len(active)} active ({counts})" if active else "none active"
    lines = [f"  alarms   {head}" + (f", {waiting} cleared, not acknowledged" if waiting else "")]
    width = max((len(a["id"]) for a in active), default=0)
    for a in active:
        notes = [f"acknowledged by {a['acked_by']}" if a["acked_by"] else "not acknowledged"]
        if a["shelved_until"]:
            notes.append(f"shelved until {a['shelved_until']}")
        message = a["message"] or a["device"] or ""
        said = " ".join(filter(None, (message + _since(a["raised"]), f"({', '.join(notes)})")))
        lines.append(f"    {a['id']:<{width}}  {a['severity']:<8}  {said}")
    return lines


def _since(stamp: str | None) -> str:
    try:
        raised = datetime.fromisoformat(stamp or "")
    except ValueError:
        return ""
    return _ago(raised.timestamp() * 1000) if raised.tzinfo is not None else ""


def run(args: argparse.Namespace) -> int:
    import aiomqtt

    kwargs, base = _connection(args)
    try:
        seen = asyncio.run(collect(kwargs, base, args.timeout))
    except aiomqtt.MqttError as exc:
        where = f"{kwargs['hostname']}:{kwargs.get('port', MQTT_PORT)}"
        print(f"cityedge: cannot reach the broker at {where}: {exc}", flush=True)
        return 1
    if seen.status is None and seen.health is None:
        print(f"nothing heard from a gateway under {base} (is it running? is the base topic right?)")
        return 1
    r = report(seen, base)
    print(json.dumps(r, indent=2) if args.json else render(r))
    return 0 if r["state"] == "online" else 1
