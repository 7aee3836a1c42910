"""Watch one node on the broker: its status, info, health and readings, as lines a technician can read."""

from __future__ import annotations

import json
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.north.mqtt_client import connection
from gateway.technician import NodeToolError
from gateway.technician.port import host_port

SENSOR_KEYS = {
    "bh1750": ["lux"],
    "bme280": ["temp", "rh", "pressure"],
    "pir": ["motion", "motion_count"],
    "jsn-sr04t": ["level"],
    "battery": ["vbat"],
}


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    host: str
    port: int = 1883
    username: str | None = None
    password_env: str | None = None
    ca: Path | None = None  # TLS with this CA; None: plain TCP
    password: str | None = field(default=None, repr=False)  # given directly (setup has it from provisioning)
    whose: str = "your"  # whose login this is, for messages: "your", or "the node's" (setup without --watch-user)

    @classmethod
    def parse(cls, address: str, **kwargs: Any) -> BrokerOptions:
        try:
            host, number = host_port(address, 8883 if kwargs.get("ca") else 1883)
        except ValueError:
            raise NodeToolError(f"--broker takes HOST or HOST:PORT, not {address!r}") from None
        return cls(host or "127.0.0.1", number or 1883, **kwargs)

    def client(self, identifier: str) -> aiomqtt.Client:
        password = self.password
        if password is None and self.password_env:
            password = os.environ.get(self.password_env)
            if password is None:
                raise NodeToolError(f"The broker password is needed: set the environment variable {self.password_env}.")
        context = ssl.create_default_context(cafile=str(self.ca)) if self.ca else None
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=identifier,
            username=self.username,
            password=password,
            tls_context=context,
            timeout=10,
        )

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def rssi_words(rssi: Any) -> str:
    if not isinstance(rssi, int | float):
        return "not reported"
    quality = (
        "good" if rssi >= -60 else "fair" if rssi >= -70 else "weak" if rssi >= -80 else "poor: move or add an antenna"
    )
    return f"{rssi} dBm ({quality})"


def reading_words(values: dict[str, Any]) -> str:
    return " · ".join(f"{k} {json.dumps(v)}" for k, v in values.items()) or "no values"


@dataclass
class NodeSeen:
    """What the broker has said about a node since watching began (fresh: not a retained leftover)."""

    status: str | None = None
    info: dict[str, Any] | None = None
    health: dict[str, Any] | None = None
    telemetry: dict[str, Any] | None = None
    fresh_info: bool = False
    first_seen: float | None = None
    telemetry_at: float | None = None
    retained_status: str | None = None  # what the broker kept from before: "online" means some board is up
    retained_boards: set[str] = field(default_factory=set)  # board ids in the info kept from before
    fresh_boards: set[str] = field(default_factory=set)  # board ids in info sent since watching began

    def other_boards(self, ours: str | None) -> set[str]:
        """Boards other than ours that are online under this node id: two boards given one id."""
        if ours is None:
            return set()
        online = self.fresh_boards | (self.retained_boards if self.retained_status == "online" else set())
        return online - {ours}

    def complete(self, health_grace: float = 10.0) -> bool:
        """A fresh reading and info, and health (or no health for a while: older firmware sends it later)."""
        if self.telemetry is None or not self.fresh_info or self.telemetry_at is None:
            return False
        return self.health is not None or time.monotonic() - self.telemetry_at > health_grace

    def take(self, leaf: str, payload: bytes, retained: bool) -> str | None:
        """Record one message; the line to show for it (None for topics we do not show)."""
        if self.first_seen is None and not retained:
            self.first_seen = time.monotonic()
        text = payload.decode(errors="replace")
        if leaf == "status":
            self.status = text
            if retained:
                self.retained_status = text
            return f"status   {text}{' (retained)' if retained else ''}"
        data = _json(payload)
        if leaf == "info" and isinstance(data, dict):
            board = data.get("board")
            if isinstance(board, str):
                (self.retained_boards if retained else self.fresh_boards).add(board)
            self.info = data
            self.fresh_info = self.fresh_info or not retained
            sensors = ", ".join(map(str, data.get("sensors", []))) or "none"
            extra = "  SAFE MODE" if data.get("safe_mode") else ""
            problems = f"  problems: {'; '.join(map(str, data['problems']))}" if data.get("problems") else ""
            return (
                f"info     firmware {data.get('firmware')} on MicroPython {data.get('python')} · sensors {sensors} · "
                f"every {data.get('interval')} s{extra}{problems}{' (retained)' if retained else ''}"
            )
        if leaf == "health" and isinstance(data, dict):
            self.health = data
            heap = int(data.get("free_heap") or 0) // 1024
            return (
                f"health   RSSI {rssi_words(data.get('rssi'))} · heap {heap} kB free · "
                f"up {data.get('uptime_s')} s · reset {data.get('reset_cause')} · buffered {data.get('buffered')}"
            )
        if leaf == "telemetry" and isinstance(data, dict):
            if self.telemetry is None:
                self.telemetry = data
                self.telemetry_at = time.monotonic()
            errors = data.get("errors") or {}
            failed = f"  sensor errors: {errors}" if errors else ""
            return f"reading  #{data.get('seq')} {reading_words(data.get('values') or {})}{failed}"
        if leaf == "cmd/result":
            return f"result   {text}"
        return None


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return None


async def watch(
    broker: BrokerOptions,
    topic: str,
    node_id: str,
    on_line: Callable[[str], None],
    *,
    done: Callable[[NodeSeen], bool] = lambda seen: False,
    duration: float | None = None,
    ready: Callable[[], None] | None = None,
) -> NodeSeen:
    """Subscribe to the node's topics and report until `done` says so or `duration` runs out."""
    import asyncio

    seen = NodeSeen()
    prefix = f"{topic}/{node_id}/"
    deadline = None if duration is None else time.monotonic() + duration
    try:
        async with connection(broker.client(f"cityedge-tech-{os.getpid()}")) as client:
            await client.subscribe(prefix + "#", qos=1)
            if ready is not None:
                ready()
            while not done(seen):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                try:  # wake at least every second: `done` may depend on time, not only on messages
                    message = await asyncio.wait_for(anext(aiter(client.messages)), timeout=min(left or 1.0, 1.0))
                except TimeoutError:
                    continue
                leaf = str(message.topic)[len(prefix) :]
                payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
                line = seen.take(leaf, payload, bool(message.retain))
                if line:
                    on_line(f"{time.strftime('%H:%M:%S')} {line}")
    except aiomqtt.MqttError as exc:
        raise NodeToolError(broker_problem(broker, exc)) from None
    return seen


REFUSED_LOGIN = {4, 5, 134, 135}  # MQTT 3.1.1 and 5: bad user name or password, not authorized


def broker_problem(broker: BrokerOptions, exc: Exception) -> str:
    """One plain sentence for a broker the laptop could not use: a refused login is not a network problem."""
    code = getattr(exc, "rc", None)
    code = getattr(code, "value", code)
    text = str(exc)
    if code in REFUSED_LOGIN or "not authori" in text.lower() or "bad user name" in text.lower():
        user = f"user '{broker.username}'" if broker.username else "an anonymous login"
        hint = (
            "this is the node's own login, used because no --watch-user was given: give yours with --watch-user and "
            "--watch-password-env, or check the node's password"
            if broker.whose == "the node's"
            else "check the user and its password, and that the broker's ACL lets it read the node topics"
        )
        return f"The broker at {broker} refused {user} ({broker.whose} login): {hint}."
    return f"Cannot reach the broker at {broker}: {text}.\nIs the laptop on the site network, and is the address right?"
