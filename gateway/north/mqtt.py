"""MqttLink: our adapter around aiomqtt. Connects (TLS, auth, failover), keeps the connection, sends the queue.

On every connection it subscribes again and calls the birth hooks (status online,
device list, availability...). The Will marks the gateway offline if it dies; a
clean stop says so itself before disconnecting. Incoming messages go to handlers
registered per topic filter, each in its own bounded task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.config.model import GatewayConfig, MqttSettings
from gateway.north.message import Kind, Outgoing, dumps
from gateway.north.queue import MessageQueue

log = logging.getLogger("cityedge.mqtt")

Handler = Callable[[aiomqtt.Message], Awaitable[None]]
Hook = Callable[[], None]
WINDOW = 64  # QoS 1 messages in flight at once
MAX_HANDLERS = 64  # incoming messages being handled at once


class SecretError(Exception):
    """A configured secret that cannot be read: a fatal configuration problem."""


def read_password(settings: MqttSettings) -> str | None:
    if settings.password_env:
        value = os.environ.get(settings.password_env)
        if value is None:
            raise SecretError(f"mqtt.password_env: environment variable {settings.password_env} is not set")
        return value
    if settings.password_file:
        try:
            return settings.password_file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise SecretError(f"mqtt.password_file: cannot read {settings.password_file}: {exc.strerror}") from None
    return None


def tls_context(settings: MqttSettings) -> ssl.SSLContext | None:
    tls = settings.tls
    if tls is None:
        return None
    try:
        context = ssl.create_default_context(cafile=str(tls.ca) if tls.ca else None)
        if tls.cert and tls.key:
            context.load_cert_chain(str(tls.cert), str(tls.key))
    except (OSError, ssl.SSLError) as exc:
        raise SecretError(f"mqtt.tls: {exc}") from None
    if tls.insecure:
        log.warning("mqtt.tls.insecure is set: the broker's certificate is NOT verified")
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class LinkStats:
    connects: int = 0
    failures: int = 0
    received: int = 0
    broker: str = ""
    connected_since: float | None = None


class MqttLink:
    def __init__(self, config: GatewayConfig, queue: MessageQueue) -> None:
        self.config = config
        self.settings = config.mqtt
        self.base = config.base_topic
        self.queue = queue
        self.stats = LinkStats()
        self.connected = asyncio.Event()
        self.client: aiomqtt.Client | None = None
        self._handlers: list[tuple[str, Handler]] = []
        self._on_connect: list[Hook] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._handling: set[asyncio.Task[None]] = set()  # incoming messages being handled
        self._sending: set[asyncio.Task[None]] = set()  # messages waiting for their PUBACK
        self._stopping = False
        self._password = read_password(self.settings)
        self._tls = tls_context(self.settings)
        self._brokers = [(self.settings.host, self.settings.port)] + [
            (b.rpartition(":")[0], int(b.rpartition(":")[2])) for b in self.settings.failover
        ]
        self._rng = random.Random()
        self.v5 = self.settings.protocol == "5"

    # -- wiring -------------------------------------------------------------------------------

    def handle(self, topic_filter: str, handler: Handler) -> None:
        self._handlers.append((topic_filter, handler))

    def on_connect(self, hook: Hook) -> None:
        """Called after every (re)connection, once subscriptions are in place: publish birth messages here."""
        self._on_connect.append(hook)

    def publish(
        self,
        topic: str,
        payload: object,
        kind: Kind,
        *,
        retain: bool = False,
        qos: int | None = None,
        properties: dict[str, Any] | None = None,
        ts: int = 0,
    ) -> None:
        body = payload if isinstance(payload, bytes) else dumps(payload)
        self.queue.put(
            Outgoing(topic, body, kind, self.settings.qos if qos is None else qos, retain, properties or {}, ts)
        )

    # -- life cycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._connection_loop(), name="mqtt-connection"),
            asyncio.create_task(self._sender(), name="mqtt-sender"),
        ]

    async def stop(self, timeout: float = 3.0) -> None:
        """Say offline, flush what we can within `timeout`, disconnect cleanly (so the Will is not sent)."""
        self._stopping = True
        client = self.client
        if client is not None and self.connected.is_set():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._flush(), timeout)
            with contextlib.suppress(Exception):
                await client.publish(
                    f"{self.base}/status", dumps({"state": "offline"}), qos=1, retain=True, timeout=timeout
                )
        for task in [*self._tasks, *self._handling, *self._sending]:
            task.cancel()
        for task in [*self._tasks, *self._handling, *self._sending]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _flush(self) -> None:
        while len(self.queue) and self.connected.is_set():
            await asyncio.sleep(0.02)

    def _client(self, host: str, port: int) -> aiomqtt.Client:
        will = aiomqtt.Will(f"{self.base}/status", dumps({"state": "offline"}), qos=1, retain=True)
        return aiomqtt.Client(
            host,
            port,
            identifier=self.config.client_id,
            username=self.settings.username,
            password=self._password,
            protocol=aiomqtt.ProtocolVersion.V5 if self.v5 else aiomqtt.ProtocolVersion.V311,
            will=will,
            keepalive=int(self.settings.keepalive),
            tls_context=self._tls,
            timeout=10,
            max_queued_incoming_messages=1000,
            max_inflight_messages=WINDOW,
            # Small packets must not wait for Nagle's algorithm: a command result is a few hundred bytes.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            logger=logging.getLogger("cityedge.mqtt.paho"),
        )

    async def _connection_loop(self) -> None:
        backoff, index = 0.5, 0
        while not self._stopping:
            host, port = self._brokers[index % len(self._brokers)]
            try:
                async with self._client(host, port) as client:
                    client.pending_calls_threshold = 4 * WINDOW  # we bound in-flight calls ourselves
                    self.client = client
                    self.stats.connects += 1
                    self.stats.broker = f"{host}:{port}"
                    self.stats.connected_since = asyncio.get_running_loop().time()
                    backoff = 0.5
                    await self._subscribe(client)
                    self.queue.on_connect()
                    client_birth = dumps({"state": "online"})
                    await client.publish(f"{self.base}/status", client_birth, qos=1, retain=True)
                    for hook in self._on_connect:
                        hook()
                    self.connected.set()
                    log.info("connected to %s:%d as %s", host, port, self.config.client_id)
                    async for message in client.messages:
                        self._dispatch(message)
            except aiomqtt.MqttError as exc:
                self.stats.failures += 1
                if self.connected.is_set() or self.stats.failures == 1 or self.stats.failures % 10 == 0:
                    log.warning("MQTT %s:%d: %s", host, port, exc)
            finally:
                self.connected.clear()
                self.queue.on_disconnect()
                self.client = None
                self.stats.connected_since = None
            if self._stopping:
                return
            index += 1
            if index % len(self._brokers) == 0:  # tried every broker: wait, longer each round
                await asyncio.sleep(backoff * self._rng.uniform(0.8, 1.2))
                backoff = min(30.0, backoff * 2)

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        for topic_filter, _ in self._handlers:
            await client.subscribe(topic_filter, qos=1)

    def _dispatch(self, message: aiomqtt.Message) -> None:
        self.stats.received += 1
        if len(self._handling) >= MAX_HANDLERS:
            log.warning("dropping %s: %d messages already being handled", message.topic, len(self._handling))
            return
        for topic_filter, handler in self._handlers:
            if message.topic.matches(topic_filter):
                task = asyncio.create_task(self._run_handler(handler, message))
                self._handling.add(task)
                task.add_done_callback(self._handling.discard)
                return

    async def _run_handler(self, handler: Handler, message: aiomqtt.Message) -> None:
        try:
            await handler(message)
        except Exception:  # a bad message must never take the gateway down
            log.exception("handling %s failed", message.topic)

    # -- sending ----------------------------------------------------------------------------------

    async def _sender(self) -> None:
        """A pipeline: up to WINDOW messages in flight, each leaving the queue when its PUBACK arrives.

        No batch waits for its slowest message, so a command result never queues behind
        a burst of telemetry acknowledgements.
        """
        window = asyncio.Semaphore(WINDOW)
        while True:
            await self.connected.wait()
            batch = await self.queue.take(WINDOW)
            for index, message in enumerate(batch):
                client = self.client
                if client is None or not self.connected.is_set():
                    self.queue.give_back(batch[index:])
                    break
                await window.acquire()
                task = asyncio.create_task(self._send_one(client, message, window))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)

    async def _send_one(self, client: aiomqtt.Client, message: Outgoing, window: asyncio.Semaphore) -> None:
        try:
            await self._send(client, message)
        except (aiomqtt.MqttError, RuntimeError):
            self.queue.give_back([message])
            await asyncio.sleep(0.1)  # the connection is probably going; let the loop notice
        else:
            self.queue.done([message])
        finally:
            window.release()

    async def _send(self, client: aiomqtt.Client, message: Outgoing) -> None:
        properties = None
        if message.properties and self.v5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if "correlation_data" in message.properties:
                properties.CorrelationData = message.properties["correlation_data"]
            if message.properties.get("replay"):
                properties.UserProperty = ("replay", "true")
        await client.publish(
            message.topic, message.payload, qos=message.qos, retain=message.retain, properties=properties, timeout=10
        )


def response_info(message: aiomqtt.Message) -> tuple[str | None, bytes | None]:
    """MQTT 5 response topic and correlation data of a request, if it has them."""
    props = message.properties
    if props is None:
        return None, None
    topic = getattr(props, "ResponseTopic", None)
    correlation = getattr(props, "CorrelationData", None)
    return topic, correlation
