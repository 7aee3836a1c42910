"""MqttLink: our adapter around aiomqtt. Connects (TLS, auth, failover), keeps the connection, sends the queue.

On every connection it subscribes again and calls the birth hooks (status online,
device list, availability...). The Will marks the gateway offline if it dies; a
clean stop says so itself before disconnecting. Incoming messages go to exactly one
route, the most specific subscription that matches their topic; each route has a
bounded queue and its own workers, and a full queue is answered (`busy`) or counted,
never silently dropped. Nothing a message carries can end the connection loop: it
survives any exception, and after an outage it probes the broker at a bounded
interval, so the uplink is back within seconds of the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
import random
import socket
import ssl
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.common.problems import KeyPath
from gateway.config.model import GatewayConfig, MqttSettings
from gateway.core.supervision import InputFaults, Supervisor, being_cancelled
from gateway.north.message import Kind, Outgoing, dumps, json_safe
from gateway.north.mqtt_client import connection
from gateway.north.queue import OutgoingQueue

log = logging.getLogger("cityedge.mqtt")

Handler = Callable[[aiomqtt.Message], Awaitable[None]]
Refuse = Callable[[aiomqtt.Message], None]
Hook = Callable[[], None]
WINDOW = 64  # QoS 1 messages in flight at once
MAX_INCOMING = 1024 * 1024  # bytes: the largest message we accept (MQTT 5 Maximum Packet Size)
RECONNECT_MIN = 0.5  # seconds before the first reconnection attempt
SESSION_TAKEN_OVER = 142  # MQTT 5 reason code: another client connected with our client id
TAKEOVER_PAUSE = 30.0  # seconds before taking the client id back; doubles while the conflict lasts
TAKEOVER_PAUSE_MAX = 600.0
SHORT_LIFE = 10.0  # seconds: a connection the broker ends sooner, right after a reconnect that worked at once, ...
QUICK_DROPS = 3  # ... this many times in a row, is another client taking our id


class SecretError(Exception):
    """A configured secret that cannot be read: a fatal configuration problem, located at its key."""

    def __init__(self, path: KeyPath, message: str) -> None:
        super().__init__(message)
        self.path = path


def read_password(settings: MqttSettings) -> str | None:
    if settings.password_env:
        value = os.environ.get(settings.password_env)
        if value is None:
            raise SecretError(("mqtt", "password_env"), f"environment variable {settings.password_env} is not set")
        return value
    if settings.password_file:
        try:
            return settings.password_file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise SecretError(
                ("mqtt", "password_file"), f"cannot read {settings.password_file}: {exc.strerror}"
            ) from None
    return None


def tls_context(settings: MqttSettings) -> ssl.SSLContext | None:
    tls = settings.tls
    if tls is None:
        return None
    for key in ("ca", "cert", "key"):
        path = getattr(tls, key)
        if path is not None and not os.access(path, os.R_OK):
            why = "does not exist" if not path.exists() else "cannot be read"
            raise SecretError(("mqtt", "tls", key), f"{path} {why}")
    try:
        context = ssl.create_default_context(cafile=str(tls.ca) if tls.ca else None)
        if tls.cert and tls.key:
            context.load_cert_chain(str(tls.cert), str(tls.key))
    except (OSError, ssl.SSLError) as exc:
        raise SecretError(("mqtt", "tls"), str(exc)) from None
    if tls.insecure:
        log.warning("mqtt.tls.insecure is set: the broker's certificate is NOT verified")
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def secret_problems(settings: MqttSettings) -> list[SecretError]:
    """Every secret the gateway would fail to read at start: the password, the TLS files (`check` and `run`)."""
    found = []
    for read in (read_password, tls_context):
        try:
            read(settings)
        except SecretError as exc:
            found.append(exc)
    return found


def security_warnings(settings: MqttSettings) -> list[str]:
    """Settings that work but expose the gateway; logged at start and shown by `cityedge check`."""
    warnings = []
    if settings.password_file is not None:
        with contextlib.suppress(OSError):
            mode = settings.password_file.stat().st_mode
            if mode & (stat.S_IROTH | stat.S_IWOTH):
                warnings.append(
                    f"mqtt.password_file {settings.password_file} can be read by every user of this machine "
                    f"(mode {stat.S_IMODE(mode):o}): chmod 600 it"
                )
    if settings.tls is None and settings.username is None and not _is_loopback(settings.host):
        warnings.append(
            f"the broker {settings.host} is not on this machine and the gateway connects with neither TLS nor "
            "a username: anyone on the network can read its data and send commands; set mqtt.tls and mqtt.username"
        )
    return warnings


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class LinkStats:
    connects: int = 0
    failures: int = 0
    received: int = 0
    takeovers: int = 0
    broker: str = ""


@dataclass
class Route:
    """One subscription: its handler, a bounded queue in front of it, and what to do when that is full."""

    topic_filter: str
    handler: Handler
    refuse: Refuse | None
    limit: int
    workers: int
    sub_id: int
    queue: asyncio.Queue[aiomqtt.Message] = field(init=False)

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(self.limit)

    @property
    def specificity(self) -> tuple[int, ...]:
        """Sorts the most specific filter first: a literal level beats `+`, which beats `#`."""
        return tuple(2 if level == "#" else 1 if level == "+" else 0 for level in self.topic_filter.split("/"))


@dataclass(frozen=True, slots=True)
class Presence:
    """What a session says of itself, retained on `topic`: `online` once connected, `offline` as its Will
    (the broker's word when the session dies) and on a clean stop."""

    topic: str
    online: bytes
    offline: bytes


@dataclass(frozen=True, slots=True)
class Session:
    """Who a broker session is: its client id, its presence (None: no birth, no Will), the trees it speaks for.

    The gateway's CityEdge tree is one session; another output (Sparkplug, with its own
    NDEATH Will) is another MqttLink with a Session of its own.
    """

    client_id: str
    presence: Presence | None = None
    owned: tuple[str, ...] = ()  # topic roots no requester may have us answer on


def gateway_session(config: GatewayConfig) -> Session:
    """The CityEdge tree's session: `<base>/status` online/offline, speaking for the base, the nodes and HA."""
    base = config.base_topic
    presence = Presence(f"{base}/status", dumps({"state": "online"}), dumps({"state": "offline"}))
    return Session(config.client_id, presence, (base, config.mqtt.node_prefix, config.homeassistant.prefix))


class MqttLink:
    def __init__(
        self,
        settings: MqttSettings,
        queue: OutgoingQueue,
        session: Session,
        *,
        faults: InputFaults | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.settings = settings
        self.session = session
        self.queue = queue
        self.faults = faults or InputFaults()
        self.supervisor = supervisor or Supervisor()
        self.stats = LinkStats()
        self.connected = asyncio.Event()
        self.client: aiomqtt.Client | None = None
        self.on_takeover: Callable[[str], None] | None = None  # told when another client took our client id
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # waits between attempts (tests replace it)
        self._routes: list[Route] = []
        self._on_connect: list[Hook] = []
        self._sending: set[asyncio.Task[None]] = set()  # messages waiting for their PUBACK
        self._stopping = False
        self._password = read_password(self.settings)
        self._tls = tls_context(self.settings)
        self._brokers = [(self.settings.host, self.settings.port)] + [
            (b.rpartition(":")[0], int(b.rpartition(":")[2])) for b in self.settings.failover
        ]
        self._rng = random.Random()
        self.v5 = self.settings.protocol == "5"
        for warning in security_warnings(self.settings):
            log.warning("%s", warning)

    @property
    def client_id(self) -> str:
        return self.session.client_id

    def status(self) -> dict[str, Any]:
        """The session's part of the gateway health."""
        stats = self.stats
        return {
            "broker": stats.broker,
            "connected": self.connected.is_set(),
            "connects": stats.connects,
            "failures": stats.failures,
            "received": stats.received,
            "takeovers": stats.takeovers,
        }

    # -- wiring -------------------------------------------------------------------------------

    def handle(
        self, topic_filter: str, handler: Handler, *, refuse: Refuse | None = None, limit: int = 1000, workers: int = 1
    ) -> None:
        """Route messages on `topic_filter` to `handler`, at most `workers` at a time.

        At most `limit` messages wait; beyond that `refuse(message)` answers the sender
        (commands and requests say `busy`), or the message is counted as dropped.
        """
        route = Route(topic_filter, handler, refuse, limit, workers, len(self._routes) + 1)
        self._routes.append(route)
        self._routes.sort(key=lambda r: r.specificity)

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
        if isinstance(payload, bytes):
            body = payload
        else:
            try:
                body = dumps(payload)
            except (ValueError, TypeError) as exc:  # a value no boundary should have let through
                self.faults.reject("unencodable_output", topic, exc)
                body = dumps(json_safe(payload))
        self.queue.put(
            Outgoing(topic, body, kind, self.settings.qos if qos is None else qos, retain, properties or {}, ts)
        )

    # -- life cycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self.supervisor.spawn("mqtt-connection", self._connection_loop)
        self.supervisor.spawn("mqtt-sender", self._sender)
        for route in self._routes:
            for n in range(route.workers):
                self.supervisor.spawn(f"mqtt-in {route.topic_filter} #{n + 1}", functools.partial(self._work, route))

    async def stop(self, timeout: float = 3.0) -> None:
        """Say offline, flush what we can within `timeout`, disconnect cleanly (so the Will is not sent)."""
        self._stopping = True
        client = self.client
        presence = self.session.presence
        if client is not None and self.connected.is_set():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._flush(), timeout)
            if presence is not None:
                with contextlib.suppress(Exception):
                    await client.publish(presence.topic, presence.offline, qos=1, retain=True, timeout=timeout)
        for name in list(self.supervisor.records):
            if name.startswith("mqtt-"):
                await self.supervisor.cancel(name)
        for task in list(self._sending):
            task.cancel()
        for task in list(self._sending):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _flush(self) -> None:
        while len(self.queue) and self.connected.is_set():
            await asyncio.sleep(0.02)

    def _client(self, host: str, port: int) -> aiomqtt.Client:
        presence = self.session.presence
        will = None if presence is None else aiomqtt.Will(presence.topic, presence.offline, qos=1, retain=True)
        connect = None
        if self.v5:  # the broker drops anything larger instead of sending it: no message can exhaust our memory
            connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            connect.MaximumPacketSize = MAX_INCOMING
        inbox = cast("type[asyncio.Queue[aiomqtt.Message]]", functools.partial(_Inbox, self._dispatch))
        return aiomqtt.Client(
            host,
            port,
            identifier=self.client_id,
            username=self.settings.username,
            password=self._password,
            protocol=aiomqtt.ProtocolVersion.V5 if self.v5 else aiomqtt.ProtocolVersion.V311,
            will=will,
            keepalive=int(self.settings.keepalive),
            tls_context=self._tls,
            timeout=10,
            queue_type=inbox,
            properties=connect,
            max_inflight_messages=WINDOW,
            # Small packets must not wait for Nagle's algorithm: a command result is a few hundred bytes.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            logger=logging.getLogger("cityedge.mqtt.paho"),
        )

    async def _connection_loop(self) -> None:
        policy = ReconnectPolicy(self.settings.reconnect_max, self._rng)
        index = 0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            host, port = self._brokers[index % len(self._brokers)]
            connected_at: float | None = None
            taken_over = False
            try:
                async with connection(self._client(host, port)) as client:
                    connected_at = loop.time()
                    await self._on_connected(client, host, port)
                    async for _ in client.messages:  # ends (MqttError) when the connection does; see _Inbox
                        pass
            except aiomqtt.MqttError as exc:
                self.stats.failures += 1
                taken_over = _reason_code(exc) == SESSION_TAKEN_OVER
                if self.connected.is_set() or self.stats.failures == 1 or self.stats.failures % 10 == 0:
                    log.warning("MQTT %s:%d: %s", host, port, exc)
            except Exception as exc:  # a bug on this path must not end the uplink for good
                if being_cancelled():
                    raise asyncio.CancelledError from exc
                self.stats.failures += 1
                log.error("MQTT connection to %s:%d failed unexpectedly: %r", host, port, exc, exc_info=True)
            finally:
                self.connected.clear()
                self.queue.on_disconnect()
                self.client = None
            if self._stopping:
                return
            lifetime = None if connected_at is None else loop.time() - connected_at
            wait, conflict = policy.after(lifetime, taken_over=taken_over)
            log.debug("MQTT %s:%d: connection lasted %s; next attempt in %.2fs", host, port, lifetime, wait)
            if conflict:
                self._taken_over(host, port, wait)
            elif lifetime is None:
                index += 1
                if index % len(self._brokers):
                    continue  # the next broker of the failover list, at once
            if wait:
                await self.sleep(wait)

    async def _on_connected(self, client: aiomqtt.Client, host: str, port: int) -> None:
        client.pending_calls_threshold = 4 * WINDOW  # we bound in-flight calls ourselves
        self.client = client
        self.stats.connects += 1
        self.stats.broker = f"{host}:{port}"
        await self._subscribe(client)
        self.queue.on_connect()
        if self.session.presence is not None:
            presence = self.session.presence
            await client.publish(presence.topic, presence.online, qos=1, retain=True)
        for hook in self._on_connect:
            try:
                hook()
            except Exception as exc:  # one feature's birth message must not keep the others (or us) down
                self.faults.reject("birth_hook", getattr(hook, "__qualname__", repr(hook)), repr(exc))
        self.connected.set()
        log.info("connected to %s:%d as %s", host, port, self.client_id)

    def _taken_over(self, host: str, port: int, pause: float) -> None:
        self.stats.takeovers += 1
        log.error(
            "MQTT %s:%d keeps closing our connection as soon as it is made: another client is connecting with "
            "our client id %r (two gateways, or a tool, share it). Not fighting for it: trying again in %gs. "
            "Give each gateway its own gateway.id or mqtt.client_id.",
            host,
            port,
            self.client_id,
            pause,
        )
        if self.on_takeover is not None:
            self.on_takeover(f"{host}:{port}")

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        for route in self._routes:
            properties = None
            if not self.v5:
                await client.subscribe(route.topic_filter, qos=1)
                continue
            # A message matching two of our filters reaches each route by its own copy (subscription ids),
            # and nothing we publish ourselves comes back to us (no local).
            properties = Properties(PacketTypes.SUBSCRIBE)  # type: ignore[no-untyped-call]
            properties.SubscriptionIdentifier = route.sub_id
            options = SubscribeOptions(qos=1, noLocal=True)
            await client.subscribe(route.topic_filter, options=options, properties=properties)

    # -- incoming ---------------------------------------------------------------------------------

    def _dispatch(self, message: aiomqtt.Message) -> None:
        """Queue the message for the one route that owns its topic; refuse it when that queue is full."""
        self.stats.received += 1
        route = next((r for r in self._routes if message.topic.matches(r.topic_filter)), None)
        if route is None:
            return
        ids = getattr(message.properties, "SubscriptionIdentifier", None) if message.properties else None
        if ids and route.sub_id not in ids:
            return  # the copy sent for a broader, overlapping subscription: the owner receives its own
        try:
            route.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.faults.reject("busy", str(message.topic), f"{route.limit} messages already waiting")
            if route.refuse is not None:
                try:
                    route.refuse(message)
                except Exception as exc:
                    self.faults.reject("handler_error", str(message.topic), repr(exc))

    async def _work(self, route: Route) -> None:
        while True:
            message = await route.queue.get()
            try:
                await route.handler(message)
            except Exception as exc:  # a bad message must never take the gateway down
                if being_cancelled():
                    raise asyncio.CancelledError from exc
                self.faults.reject("handler_error", str(message.topic), f"{type(exc).__name__}: {exc}")
                log.debug("traceback of the handler error", exc_info=True)

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


class ReconnectPolicy:
    """When to try the broker again, and when another client is taking our client id.

    After a connection that was up ends, the next attempt is at once: most drops are
    over in an instant. Failed attempts back off, doubling up to `maximum`, so the
    uplink is back within seconds of a broker that was away for hours. A broker that
    says the session was taken over (MQTT 5 reason 142), or that ends connection after
    connection within seconds although each reconnect works at once (what mosquitto
    does when two clients share one id), means another client has our id: then the
    wait starts at TAKEOVER_PAUSE and doubles, so two gateways never fight in a loop.
    """

    def __init__(self, maximum: float, rng: random.Random) -> None:
        self.maximum, self.rng = maximum, rng
        self.backoff = RECONNECT_MIN
        self.takeover_pause = 0.0  # the next pause over a taken id; 0: TAKEOVER_PAUSE
        self.quick_drops = 0
        self.at_once = False  # the current attempt came straight after a drop

    def after(self, lifetime: float | None, *, taken_over: bool = False) -> tuple[float, bool]:
        """(seconds to wait, another client has our id?) after an attempt; lifetime is None if it never connected."""
        if lifetime is None:
            self.at_once = False
            wait = self.backoff * self.rng.uniform(0.8, 1.2)
            self.backoff = min(self.maximum, self.backoff * 2)
            return wait, False
        self.backoff = RECONNECT_MIN
        if lifetime >= SHORT_LIFE:
            self.quick_drops = 0
            if lifetime > TAKEOVER_PAUSE_MAX:
                self.takeover_pause = 0.0
        elif self.at_once:
            self.quick_drops += 1
        if taken_over or self.quick_drops >= QUICK_DROPS:
            self.quick_drops, self.at_once = 0, False
            pause = self.takeover_pause or TAKEOVER_PAUSE
            self.takeover_pause = min(TAKEOVER_PAUSE_MAX, pause * 2)
            return pause, True
        self.at_once = True
        return 0.0, False


class _Inbox(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's incoming queue, replaced: each message goes straight to its route as it arrives.

    aiomqtt would otherwise buffer messages in a queue of its own and discard them
    with a log line when it is full; our routes are bounded too, but every message
    they cannot take is answered or counted.
    """

    def __init__(self, dispatch: Callable[[aiomqtt.Message], None], maxsize: int = 0) -> None:
        super().__init__()
        self._dispatch = dispatch

    def put_nowait(self, item: aiomqtt.Message) -> None:
        self._dispatch(item)


def _reason_code(exc: BaseException) -> int | None:
    """The MQTT reason code behind an aiomqtt error (its message iterator raises it as the cause)."""
    rc = getattr(exc, "rc", None)
    value = getattr(rc, "value", rc)
    if isinstance(value, int):
        return value
    return _reason_code(exc.__cause__) if exc.__cause__ is not None else None


def response_info(message: aiomqtt.Message) -> tuple[str | None, bytes | None]:
    """MQTT 5 response topic and correlation data of a request, if it has them."""
    props = message.properties
    if props is None:
        return None, None
    topic = getattr(props, "ResponseTopic", None)
    correlation = getattr(props, "CorrelationData", None)
    return topic, correlation
