"""`cityedge demo`: a whole city block on loopback — broker, emulated devices, ESP32 nodes, the gateway.

Everything runs in this process tree and stops on Ctrl-C (or after --duration), leaving
no process or pty behind. With --faults a timeline of faults shows detection and recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiomqtt
import yaml

from gateway.app import Gateway
from gateway.core.inputs import parse_json
from gateway.north.mqtt_client import connection
from hil.broker import MosquittoBroker, find_mosquitto
from hil.site.emulated import Site
from hil.site.scenario import Step, gateway_config, load_scenario

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "demo-block.yaml"
USER = "cityedge-demo"

# (seconds after start, what an operator will see, the step) — the broker restart is special-cased.
FAULTS: list[tuple[float, str, dict[str, Any] | None]] = [
    (15, "lamp failure on ballast 3 (lamps)", {"device": "lamps", "stimulus": "lamp_failure", "args": {"ballast": 3}}),
    (20, "feeder meter stops answering", {"device": "feeder-meter", "fault": {"timeout": True}}),
    (30, "pole-2 loses its WiFi", {"node": "pole-2", "wifi": "off"}),
    (38, "feeder meter answers again", {"device": "feeder-meter", "clear": True}),
    (45, "the broker restarts", None),
    (55, "pole-2 WiFi is back", {"node": "pole-2", "wifi": "on"}),
    (60, "heavy rain on the river", {"device": "river-level", "stimulus": "rain", "args": {"mm_per_h": 40}}),
]
SHOWN = {
    "lamps": ("ballast_0_level", "ballast_3_lamp_failure"),
    "feeder-meter": ("voltage_l1", "power_total"),
    "feeder-relay": ("breaker_closed", "current_l1"),
    "river-level": ("pressure",),
    "outfall-flow": ("flow",),
    "supply-meter": ("energy_import",),
    "water-meter": ("volume",),
    "pole-1": ("illuminance", "battery"),
    "pole-2": ("illuminance", "motion"),
    "pole-3": ("illuminance", "battery"),
}


class EmbeddedBroker:
    """The development fallback when mosquitto is not installed: amqtt in this process, with a password."""

    def __init__(self, password: str, directory: Path) -> None:
        from hil.broker import free_port

        self.host, self.port = "127.0.0.1", free_port()
        self.password_file = directory / "broker-passwd"
        self.password = password
        self.broker: Any = None

    async def start(self) -> None:
        try:
            from amqtt.broker import Broker
            from pwdlib.hashers.argon2 import Argon2Hasher
        except ImportError:
            raise RuntimeError("no broker: install mosquitto (scripts/setup) or amqtt, or give --broker") from None
        self.password_file.write_text(f"{USER}:{Argon2Hasher().hash(self.password)}\n")
        self.broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                "plugins": {"amqtt.plugins.authentication.FileAuthPlugin": {"password_file": str(self.password_file)}},
            }
        )
        await self.broker.start()

    async def stop(self) -> None:
        if self.broker is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.broker.shutdown(), 5)  # never hang a Ctrl-C on the broker
            self.broker = None

    async def restart(self, down_for: float) -> None:
        await self.stop()
        await asyncio.sleep(down_for)
        await self.start()


def _json(payload: bytes) -> Any:
    """A message of the block's tree, read as the gateway reads its own inputs: deep or huge JSON, NaN and numbers
    too large to be true are refused (InputError, a ValueError) instead of reaching the table."""
    return parse_json(payload, max_bytes=1024 * 1024)


@dataclass
class View:
    """What an operator would see on the broker, kept up to date by a subscriber."""

    availability: dict[str, str] = field(default_factory=dict)
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    status: str = "?"
    alarms: list[dict[str, Any]] = field(default_factory=list)
    lighting: dict[str, dict[str, Any]] = field(default_factory=dict)

    def take(self, base: str, topic: str, payload: bytes) -> None:
        rest = topic[len(base) + 1 :]
        if rest == "status":
            self.status = _json(payload).get("state", "?")
        elif rest == "event":
            event = _json(payload)
            detail = event.get("alarm") or event.get("device") or event.get("link") or event.get("node") or ""
            self.events.append(f"{time.strftime('%H:%M:%S')} {event['kind']} {detail}".rstrip())
            del self.events[:-6]
        elif rest == "alarms":
            listed = _json(payload)
            self.alarms = [a for a in listed if isinstance(a, dict)] if isinstance(listed, list) else []
        elif rest.startswith("lighting/"):
            state = _json(payload)
            if isinstance(state, dict):
                self.lighting[rest.split("/", 1)[1][:64]] = state
        elif rest.endswith("/availability"):
            self.availability[rest.split("/")[0]] = payload.decode()
        elif rest.endswith("/state"):
            state = _json(payload)
            device = rest.split("/")[0]
            values, errors = state.get("values", {}), state.get("errors", {})
            self.values[device] = values if isinstance(values, dict) else {}
            self.errors[device] = errors if isinstance(errors, dict) else {}

    def table(self) -> str:
        lines = [f"gateway: {self.status}", f"{'DEVICE':<14} {'STATE':<9} VALUES"]
        for device, points in SHOWN.items():
            values = self.values.get(device, {})
            shown = "  ".join(f"{p}={values[p]}" for p in points if p in values)
            errors = self.errors.get(device)
            if errors:
                shown += f"  errors: {len(errors)} ({next(iter(errors.values()))})"
            lines.append(f"{device:<14} {self.availability.get(device, '...'):<9} {shown}")
        if self.lighting:
            lit = [f"{t} {p.get('level', '?'):g}% ({p.get('reason', '?')})" if isinstance(p.get("level"), int | float)
                   else f"{t} ?" for t, p in sorted(self.lighting.items())]  # fmt: skip
            lines.append("lighting: " + ", ".join(lit))
        active = [a for a in self.alarms if a.get("active")]
        shown = ", ".join(f"{a.get('id')} ({a.get('severity', '?')})" for a in active[:3]) + (
            ", ..." if len(active) > 3 else ""
        )
        lines.append(f"alarms: {len(active)} active" + (f": {shown}" if active else ""))
        lines.append("recent events:")
        lines += [f"  {e}" for e in self.events] or ["  (none yet)"]
        return "\n".join(lines)


def banner(base: str, host: str, port: int, password: str, out: TextIO) -> None:
    login = f"-h {host} -p {port} -u {USER} -P {password}"
    dim = '{"transaction":"d1","values":{"group_1_arc_power":30}}'
    select = '{"transaction":"s1","select":{"breaker_command":"open"}}'
    operate = '{"transaction":"o1","values":{"breaker_command":"open"},"token":"TOKEN"}'
    # mosquitto_rr sends with an MQTT 5 response topic and prints the one answer: the token comes back to
    # whoever asked, and only that response topic may operate the selection.
    rr = f"mosquitto_rr {login} -t {base}/feeder-relay/set -e replies/{USER}/breaker"
    lines = [
        "CityEdge demo: a city block on loopback (Ctrl-C stops everything)",
        f"  broker     {host}:{port}  user {USER}  password {password}",
        f"  watch      mosquitto_sub {login} -t '{base}/#' -v",
        f"  dim        mosquitto_pub {login} -t {base}/lamps/set -m '{dim}'",
        "  breaker    select (it answers a token), then operate with that token within 10 s:",
        f"             {rr} -m '{select}'",
        f"             {rr} -m '{operate}'",
        f"             both steps are also on {base}/feeder-relay/event",
        "  docs       docs/operator/mqtt-topics.md, docs/operator/send-commands.md",
        "",
    ]
    out.write("\n".join(lines))
    out.flush()


def _web(data: dict[str, Any], tmp: Path, password: str) -> tuple[str, str] | None:
    """The dashboard and the metrics endpoint on free loopback ports, with one user; None without the web extra."""
    try:
        import aiohttp  # noqa: F401

        from gateway.north.dashboard.users import Users
    except ImportError:
        return None
    users = Users.load(tmp / "dashboard-users.json")
    users.set(USER, password)
    users.save()
    data["dashboard"] = {"port": 0, "users": str(tmp / "dashboard-users.json")}
    data["metrics"] = {"port": 0}
    return USER, password


def _web_lines(gateway: Gateway, user: str, password: str) -> str:
    ports = {type(w).__name__: w.port for w in gateway.web}
    return (
        f"  dashboard  http://127.0.0.1:{ports['Dashboard']}/  (log in as {user}, password {password}, to command)\n"
        f"  metrics    http://127.0.0.1:{ports['MetricsServer']}/metrics  (Prometheus)\n\n"
    )


async def watch(host: str, port: int, password: str, base: str, view: View) -> None:
    while True:
        with contextlib.suppress(aiomqtt.MqttError):
            async with connection(aiomqtt.Client(host, port, username=USER, password=password)) as client:
                await client.subscribe(f"{base}/#", qos=1)
                async for m in client.messages:
                    with contextlib.suppress(ValueError, KeyError, AttributeError, TypeError):
                        view.take(base, str(m.topic), m.payload)  # a message nobody can use changes nothing
        await asyncio.sleep(0.5)


async def run_demo(
    duration: float | None,
    faults: bool,
    external: str | None,
    table: bool,
    out: TextIO = sys.stdout,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    loaded = load_scenario(SCENARIO)
    base = f"cityedge/{loaded.scenario.name}"
    password = secrets.token_urlsafe(9)
    tmp = Path(tempfile.mkdtemp(prefix="cityedge-demo-"))
    broker: MosquittoBroker | EmbeddedBroker | None = None
    if external:
        host, _, port_text = external.rpartition(":")
        port, password = int(port_text), ""
    elif find_mosquitto() is not None:
        broker = MosquittoBroker(users={USER: password})
        broker.start()
        host, port = broker.host, broker.port
    else:
        out.write(
            "mosquitto is not installed: using the embedded amqtt broker (a development default, "
            "in memory, not for production)\n"
        )
        broker = EmbeddedBroker(password, tmp)
        await broker.start()
        host, port = broker.host, broker.port
    site = Site(loaded)
    gateway: Gateway | None = None
    tasks: list[asyncio.Task[Any]] = []
    try:
        await site.start()
        data = gateway_config(loaded, site.endpoint_addresses())
        (tmp / "mqtt-password").write_text(password)
        data["mqtt"] = {
            "host": host,
            "port": port,
            "base_topic": base,
            **({"username": USER, "password_file": str(tmp / "mqtt-password")} if password else {}),
        }
        if isinstance(broker, EmbeddedBroker):
            data["mqtt"]["protocol"] = "3.1.1"  # amqtt speaks MQTT 3.1.1 only
        data["store"] = {"path": str(tmp / "outbox.db")}
        data["homeassistant"] = {"enabled": True}
        web_login = _web(data, tmp, password or secrets.token_urlsafe(9))
        config = tmp / "gateway.yaml"
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        node_broker = {"user": USER, "password": password} if password else {}
        for node in loaded.scenario.nodes:
            node.config.setdefault("broker", node_broker)
        await site.start_nodes(host, port, tmp / "nodes")
        gateway = Gateway(config)
        await gateway.start()
        banner(base, host, port, password, out)
        if web_login is not None:
            out.write(_web_lines(gateway, *web_login))
        if on_ready is not None:
            on_ready({"host": host, "port": port, "user": USER, "password": password, "base": base})
        view = View()
        tasks.append(asyncio.create_task(watch(host, port, password, base, view)))
        if faults:
            tasks.append(asyncio.create_task(play_faults(site, broker, view, out)))
        await show(view, duration, table, out)
    finally:
        for task in tasks:
            task.cancel()
        if gateway is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gateway.stop(), 15)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(site.stop(), 15)
        if isinstance(broker, EmbeddedBroker):
            await broker.stop()
        elif broker is not None:
            broker.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


async def play_faults(site: Site, broker: MosquittoBroker | EmbeddedBroker | None, view: View, out: TextIO) -> None:
    start = time.monotonic()
    for at, what, step in FAULTS:
        await asyncio.sleep(max(0.0, at - (time.monotonic() - start)))
        view.events.append(f"{time.strftime('%H:%M:%S')} FAULT: {what}")
        out.write(f"[demo] t={at:g}s {what}\n")
        out.flush()
        if step is None:
            if isinstance(broker, EmbeddedBroker):
                await broker.restart(2.0)
            elif broker is not None:
                await asyncio.to_thread(broker.restart, 2.0)
        else:
            await site.apply(Step.model_validate({"at": at, **step}))


async def show(view: View, duration: float | None, table: bool, out: TextIO) -> None:
    start = time.monotonic()
    interactive = table and out.isatty()
    while duration is None or time.monotonic() - start < duration:
        await asyncio.sleep(2 if interactive else 10)
        if interactive:
            out.write("\x1b[H\x1b[J" + view.table() + "\n")
        elif table:
            out.write(view.table() + "\n\n")
        out.flush()
