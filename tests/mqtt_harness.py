"""A watching MQTT client and an in-process gateway, for tests against a real mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import yaml

from gateway.app import Gateway
from gateway.north.mqtt_client import connection
from hil.broker import MosquittoBroker
from hil.site.emulated import Site
from hil.site.scenario import gateway_config
from tests.peers import ModbusPeer


@dataclass
class Seen:
    topic: str
    payload: bytes
    retain: bool
    properties: Any

    def json(self) -> Any:
        return json.loads(self.payload)


class Watcher:
    """Subscribes to everything and keeps what it saw; reconnects when the broker restarts."""

    def __init__(
        self,
        broker: MosquittoBroker | Any,
        topics: tuple[str, ...] = ("#",),
        v5: bool = True,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.broker, self.topics, self.v5 = broker, topics, v5
        self.username, self.password = username, password
        self.seen: list[Seen] = []
        self.client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stopping = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                protocol = aiomqtt.ProtocolVersion.V5 if self.v5 else aiomqtt.ProtocolVersion.V311
                async with connection(
                    aiomqtt.Client(
                        self.broker.host,
                        self.broker.port,
                        protocol=protocol,
                        identifier=f"watcher-{uuid.uuid4().hex[:8]}",
                        username=self.username,
                        password=self.password,
                        # Without it every QoS 1 publish waits for a delayed ACK: seconds per thousand messages.
                        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                    )
                ) as client:
                    self.client = client
                    client.pending_calls_threshold = 100_000  # tests send thousands at once on purpose
                    for topic in self.topics:
                        await client.subscribe(topic, qos=1)
                    self._ready.set()
                    async for m in client.messages:
                        payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                        self.seen.append(Seen(str(m.topic), payload, m.retain, m.properties))
            except aiomqtt.MqttError:
                self.client = None
                self._ready.clear()
                await asyncio.sleep(0.2)

    async def stop(self) -> None:
        # aiomqtt can turn a cancellation during connect into an MqttError, which the loop would retry:
        # the flag ends the loop whatever the cancellation became, and the wait is bounded.
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, 10)

    def on(self, topic: str) -> list[Seen]:
        return [s for s in self.seen if s.topic == topic]

    def last(self, topic: str) -> Seen | None:
        found = self.on(topic)
        return found[-1] if found else None

    async def wait_for(
        self, check: Callable[[Seen], bool], timeout: float = 10.0, since: int = 0, what: str = "message"
    ) -> Seen:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        index = since
        while True:
            while index < len(self.seen):
                if check(self.seen[index]):
                    return self.seen[index]
                index += 1
            if loop.time() > deadline:
                raise AssertionError(f"no {what} within {timeout}s")
            await asyncio.sleep(0.02)

    async def topic(self, topic: str, timeout: float = 10.0, since: int = 0) -> Seen:
        return await self.wait_for(lambda s: s.topic == topic, timeout, since, what=topic)

    async def send(self, topic: str, payload: bytes | str | dict[str, Any], **kwargs: Any) -> None:
        await asyncio.wait_for(self._ready.wait(), 15)
        body = json.dumps(payload) if isinstance(payload, dict) else payload
        assert self.client is not None
        await self.client.publish(topic, body, qos=1, **kwargs)

    async def ask(self, topic: str, answer_topic: str, body: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Send `body` (given a fresh transaction) and wait for the answer that carries it."""
        body = {"transaction": uuid.uuid4().hex, **body}
        since = len(self.seen)
        await self.send(topic, body)
        seen = await self.wait_for(
            lambda s: s.topic == answer_topic and s.json().get("transaction") == body["transaction"],
            timeout,
            since,
            what=f"answer to {body}",
        )
        result: dict[str, Any] = seen.json()
        return result

    async def command(self, base: str, device: str, body: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        return await self.ask(f"{base}/{device}/set", f"{base}/{device}/set/result", body, timeout)

    async def request(
        self, base: str, action: str, body: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> dict[str, Any]:
        return await self.ask(f"{base}/request/{action}", f"{base}/response/{action}", body or {}, timeout)


def write_gateway_config(site: Site, broker: MosquittoBroker, path: Path, **extra: Any) -> Path:
    data = gateway_config(site.loaded, site.endpoint_addresses())
    for device in data["devices"]:
        device["poll"] = min(device["poll"], 0.5)
    for link in data["links"]:
        link["timeout"] = 0.3
    data["mqtt"] = {"host": broker.host, "port": broker.port, "keepalive": 5, **extra.pop("mqtt", {})}
    data["gateway"] = {"id": site.loaded.scenario.name, "health_interval": 2, **extra.pop("gateway", {})}
    data["store"] = {"path": str(path.parent / "outbox.db"), **extra.pop("store", {})}
    for key, value in extra.items():
        data[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


async def start_gateway(path: Path) -> Gateway:
    gateway = Gateway(path)
    await gateway.start()
    return gateway


def plain_config(
    path: Path,
    broker: MosquittoBroker,
    *,
    gateway: dict[str, Any] | None = None,
    mqtt: dict[str, Any] | None = None,
    **sections: Any,
) -> Path:
    """A gateway configuration written out directly, for tests against peers of their own."""
    data: dict[str, Any] = {
        "gateway": {"id": "hard", "health_interval": 1, **(gateway or {})},
        "mqtt": {"host": broker.host, "port": broker.port, "keepalive": 5, **(mqtt or {})},
        "store": {"path": str(path.parent / "outbox.db")},
        **sections,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass
class Rig:
    """A gateway polling an independent peer, against a real broker, with a client that sees everything."""

    broker: MosquittoBroker
    watcher: Watcher
    gateway: Gateway
    peer: ModbusPeer
    tmp: Path


@contextlib.asynccontextmanager
async def peer_rig(
    broker: MosquittoBroker,
    tmp: Path,
    peer: ModbusPeer,
    devices: list[dict[str, Any]],
    link_timeout: float = 0.3,
    **sections: Any,
) -> AsyncIterator[Rig]:
    """Start `peer`, a watcher and a gateway polling `devices` on the peer's link `net`; stop all three after."""
    await peer.start()
    path = plain_config(tmp / "gw.yaml", broker, links=[peer.link(timeout=link_timeout)], devices=devices, **sections)
    watcher = Watcher(broker)
    await watcher.start()
    gateway = await start_gateway(path)
    try:
        yield Rig(broker, watcher, gateway, peer, tmp)
    finally:
        await gateway.stop()
        await watcher.stop()
        await peer.stop()
