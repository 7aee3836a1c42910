"""ESP32 nodes as a source: `<prefix>/<id>/...` on the cabinet's broker in, devices like any other out.

Every configured node becomes a device in the live state store, mapped through its
node profile (telemetry key -> point); its readings and health enter the event bus
as the same device updates and health changes as a polled device's, so nodes appear
in the device list, Home Assistant discovery, `request/read` and everything built on
the core. Payloads are checked (size, depth, shape, types, a plausible timestamp);
garbage is counted and logged, never trusted, and a NaN or infinite reading is an
error of its point. A node is offline on its Will or when silent for `stale_after`.
Commands reach the node as a `config` command and count only when that node answers
the request sent to it. The gateway also publishes its clock on `<prefix>/time`, the
nodes' fallback when NTP is out of reach.

The node tree is on an MQTT session (by default the gateway's own): that session is
this source's transport, as a serial port is a Modbus link's.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from gateway.config.loader import LoadedConfig
from gateway.core.commands import CommandError
from gateway.core.events import DeviceUpdate, EventBus, HealthChanged, UnknownNode
from gateway.core.inputs import BadNumber, InputError, parse_json, without_bad_numbers
from gateway.core.state import StateStore
from gateway.core.supervision import InputFaults, Supervisor, guarded
from gateway.north.message import Kind
from gateway.north.mqtt import MqttLink
from gateway.points.types import DataType, Value
from gateway.profiles.expand import PointSpec, ResolvedProfile
from gateway.south.nodes.profile import NodeKey

MAX_NODE_PAYLOAD = 8 * 1024
MAX_UNKNOWN = 1000
MAX_NODE_ID = 64
NODE_WAITING = 10_000  # node messages queued for the source; a flood beyond this is counted and dropped
COMMAND_TIMEOUT = 10.0
EARLIEST_TS = 946_684_800_000  # 2000-01-01: an ESP32 that has not learnt the time yet counts from here
FUTURE_MS = 86_400_000  # a node clock a day ahead of ours is wrong, not early
KINDS = ("telemetry", "status", "health", "info")
NUMBER_ERRORS = ("not_a_number", "infinite", "too_large")


WILL_SETTLE = 1.5  # seconds a Will waits: long enough to see whether the broker is going down with it


@dataclass
class NodeHealth:
    """A node's availability as the gateway sees it, and the node's own last health report."""

    online: bool | None = None
    reason: str | None = None
    rejected: int = 0
    gaps: int = 0
    implausible: int = 0  # readings outside their point's plausible range, published as errors instead
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def known(self) -> bool:
        return self.online is not None

    @property
    def state_name(self) -> str:
        return "online" if self.online else "offline"

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state_name,
            "reason": self.reason,
            "rejected_messages": self.rejected,
            "sequence_gaps": self.gaps,
            "implausible": self.implausible,
            "node": self.report,
        }


class NodeDevice:
    """One configured node, as the live state store keeps it."""

    source = "node"

    def __init__(self, node_id: str, resolved: ResolvedProfile, stale_after: float, prefix: str) -> None:
        self.id = node_id
        self.resolved = resolved
        self.stale_after = stale_after
        self.prefix = prefix
        self.values: dict[str, Value] = {}
        self.errors: dict[str, str] = {}
        self.ts: int | None = None
        self.health = NodeHealth()
        self.info: dict[str, Any] = {}
        self.last_seen = 0.0
        self.last_seq: int | None = None
        self.held: asyncio.TimerHandle | None = None  # an offline held back while nodes reconnect
        self.held_session = 0  # the gateway's session count when it was held

    def point_ts(self, name: str) -> int | None:
        return self.ts if name in self.values or name in self.errors else None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node_topic": f"{self.prefix}/{self.id}", "stale_after_s": self.stale_after}
        if self.info:
            out["info"] = self.info
        return out


class NodeSource:
    def __init__(
        self,
        loaded: LoadedConfig,
        bus: EventBus,
        store: StateStore,
        mqtt: MqttLink,
        *,
        faults: InputFaults | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.loaded = loaded
        self.bus = bus
        self.store = store
        self.mqtt = mqtt  # the broker session the node tree is on
        self.faults = faults or InputFaults()
        self.supervisor = supervisor or Supervisor()
        self.prefix = loaded.config.mqtt.node_prefix
        self.nodes: dict[str, NodeDevice] = {}
        self.garbage = 0
        self.unknown: set[str] = set()
        self.pending: dict[str, tuple[str, asyncio.Future[dict[str, Any]]]] = {}
        self.connected_at = -math.inf  # when the gateway's session to the broker last came back (not: first began)
        self.sessions = 0

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe (before the session starts), add the nodes to the store, watch for silent ones."""
        for kind in KINDS:
            self.mqtt.handle(f"{self.prefix}/+/{kind}", self.on_message, limit=NODE_WAITING)
        self.mqtt.handle(f"{self.prefix}/+/cmd/result", self.on_result, limit=NODE_WAITING)
        self.mqtt.on_connect(self._connected)
        self.store.section("nodes", self.status)
        self._load(self.loaded)
        self.supervisor.spawn("nodes-watch", self._watch)

    async def stop(self) -> None:
        await self.supervisor.cancel("nodes-watch")
        for device in self.nodes.values():
            self._release(device)
        for node_id in self.nodes:
            self.store.remove(node_id)

    def reload(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        self._load(loaded)

    def _load(self, loaded: LoadedConfig) -> None:
        old, self.nodes = self.nodes, {}
        for node in loaded.config.nodes:
            if not node.enabled or node.id not in loaded.nodes:
                continue
            device = old.pop(node.id, None) or NodeDevice(node.id, loaded.nodes[node.id], node.stale_after, self.prefix)
            device.resolved, device.stale_after = loaded.nodes[node.id], node.stale_after
            self.nodes[node.id] = device
            self.store.add(device)
        for gone in old:
            self.store.remove(gone)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.loaded.config.gateway.health_interval)
            guarded(self.faults, "periodic_failed", "nodes-watch", self._periodic)

    def _periodic(self) -> None:
        now = time.monotonic()
        if not self.mqtt.connected.is_set() or now - self.connected_at < self._grace():
            return  # silence while the gateway itself was away (or just back) says nothing about the nodes
        for device in self.nodes.values():
            if device.health.online and now - max(device.last_seen, self.connected_at) > device.stale_after:
                self._set_online(device, False, "stale")
        self._publish_time()

    def _connected(self) -> None:
        self.sessions += 1
        if self.sessions > 1:  # back after the broker (or the way to it) was away: so are the nodes, soon
            self.connected_at = time.monotonic()
            for device in self.nodes.values():
                if device.held is not None:  # Wills the broker sent as it went down: wait for the nodes
                    self._hold(device, self._grace())
        self._publish_time()

    def _grace(self) -> float:
        return self.loaded.config.mqtt.node_grace

    def _went_offline(self, device: NodeDevice) -> None:
        """A node's Will. A broker that goes down sends every client's Will just before it drops the gateway,
        and after a restart the retained ones come again: so a Will is held for a moment, and for the grace
        after the gateway's session comes back; a node that reconnects meanwhile was never away."""
        if device.held is not None:
            return
        if device.health.online is not True or self._grace() == 0:
            self._set_online(device, False, "will")
            return
        left = self.connected_at + self._grace() - time.monotonic()
        self._hold(device, max(left, WILL_SETTLE))

    def _hold(self, device: NodeDevice, seconds: float) -> None:
        self._release(device)
        device.held_session = self.sessions
        device.held = asyncio.get_running_loop().call_later(seconds, self._grace_over, device)

    def _grace_over(self, device: NodeDevice) -> None:
        device.held = None
        if self.nodes.get(device.id) is not device:
            return
        if not self.mqtt.connected.is_set():
            device.held = asyncio.get_running_loop().call_later(WILL_SETTLE, self._grace_over, device)
            return  # the gateway is away too: decide once it is back (_connected holds it for the grace)
        left = self.connected_at + self._grace() - time.monotonic()
        if device.held_session != self.sessions and left > 0:
            self._hold(device, left)  # the session changed since the Will: the nodes get their grace
            return
        self._set_online(device, False, "will")

    def _release(self, device: NodeDevice) -> None:
        if device.held is not None:
            device.held.cancel()
            device.held = None

    def _publish_time(self) -> None:
        self.mqtt.publish(f"{self.prefix}/time", {"ts": int(time.time() * 1000)}, Kind.CONTROL, retain=True, qos=0)

    # -- incoming ---------------------------------------------------------------------------------

    async def on_message(self, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        parts = topic[len(self.prefix) + 1 :].split("/")
        if len(parts) != 2:
            return
        node_id, kind = parts
        device = self.nodes.get(node_id)
        if device is None:
            if len(node_id) > MAX_NODE_ID:
                self.faults.reject("node_bad_topic", topic[:100], "node id longer than 64")
            elif node_id not in self.unknown and len(self.unknown) < MAX_UNKNOWN:
                self.unknown.add(node_id)
                self.bus.publish(UnknownNode(node_id, topic))
            return
        raw = message.payload if isinstance(message.payload, bytes | bytearray) else str(message.payload).encode()
        try:
            self._take(device, kind, raw)
        except InputError as exc:
            self.garbage += 1
            device.health.rejected += 1
            self.faults.reject(f"node_{exc.code}", topic, exc)

    def _take(self, device: NodeDevice, kind: str, raw: bytes | bytearray) -> None:
        if kind == "status":
            if raw not in (b"online", b"offline"):
                raise InputError("bad_status", "status is online or offline")
            if raw == b"offline":
                self._went_offline(device)
                return
            if device.held is not None:  # back within the grace: it was never reported away
                self._release(device)
                return
            if device.health.online is not True:
                # A new session: the node reports its health right after this; until then its report from
                # before the outage (buffer, reconnects) would be republished as if it were current.
                device.health.report = {}
            device.last_seen = time.monotonic()  # its silence counts from now, not from before the gateway began
            self._set_online(device, True, None)
            return
        data = parse_json(raw, max_bytes=MAX_NODE_PAYLOAD)
        if not isinstance(data, dict):
            raise InputError("bad_json", "not a JSON object")
        if kind == "telemetry":
            self._telemetry(device, data)
        elif kind == "health":
            device.health.report = self._free_form(device.id, kind, data)
            self._health_changed(device, device.health.state_name if device.health.known else None)
        elif kind == "info":
            device.info = self._free_form(device.id, kind, data)
        device.last_seen = time.monotonic()
        self._release(device)  # it speaks: whatever its Will said, it is here
        if device.health.online is not True:
            self._set_online(device, True, None)

    def _free_form(self, node_id: str, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        """A node's own health or info, kept to republish: without numbers that mean nothing."""
        clean, removed = without_bad_numbers(data)
        if removed:
            self.faults.reject("node_not_finite", f"{self.prefix}/{node_id}/{kind}", f"{removed} non-finite value(s)")
        result: dict[str, Any] = clean
        return result

    def _telemetry(self, device: NodeDevice, data: dict[str, Any]) -> None:
        values_in, ts, seq = data.get("values"), data.get("ts"), data.get("seq")
        if not isinstance(values_in, dict):
            raise InputError("bad_telemetry", "telemetry needs values (an object)")
        if not isinstance(ts, int) or isinstance(ts, bool) or not EARLIEST_TS <= ts <= time.time() * 1000 + FUTURE_MS:
            raise InputError("bad_timestamp", f"ts must be epoch milliseconds, got {str(ts)[:32]}")
        if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**53):
            raise InputError("bad_telemetry", "seq must be a non-negative integer")
        errors_in = data.get("errors")
        values, errors = _readings(device.resolved, values_in, errors_in if isinstance(errors_in, dict) else {})
        device.health.implausible += sum(1 for e in errors.values() if e == "implausible")
        if seq is not None:
            if device.last_seq is not None and seq > device.last_seq + 1:
                device.health.gaps += seq - device.last_seq - 1
            device.last_seq = max(seq, device.last_seq or 0)
        device.values, device.errors, device.ts = values, errors, ts
        received = asyncio.get_running_loop().time()
        self.bus.publish(DeviceUpdate(device.id, ts, dict(values), dict(errors), received, seq))

    def _set_online(self, device: NodeDevice, online: bool, reason: str | None) -> None:
        health = device.health
        if health.online == online:
            return
        previous = health.state_name if health.known else None
        health.online, health.reason = online, reason
        self._health_changed(device, previous)

    def _health_changed(self, device: NodeDevice, previous: str | None) -> None:
        health = device.health
        if health.known:
            self.bus.publish(HealthChanged(device.id, health.state_name, previous, health.reason, health.to_json()))

    # -- commands -------------------------------------------------------------------------------

    async def write(self, device_id: str, values: Mapping[str, Value], *, readback: bool) -> dict[str, Value | None]:
        """Send checked values to the node as one `config` command; wait for that node's answer."""
        device = self.nodes[device_id]
        changes: dict[str, Any] = {}
        for name, value in values.items():
            point = device.resolved.point(name)
            changes[_key(point) if point else name] = value
        if not device.health.online:
            raise CommandError("device_offline", f"{device_id} is offline ({device.health.reason})")
        # Our own unguessable id, not the operator's transaction: only this node, answering this request, counts.
        request_id = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = (device_id, future)
        try:
            command = {"id": request_id, "cmd": "config", "set": changes}
            self.mqtt.publish(f"{self.prefix}/{device_id}/cmd", command, Kind.REPLY, qos=1)
            answer = await asyncio.wait_for(future, COMMAND_TIMEOUT)
        except TimeoutError:
            raise CommandError("timeout", f"{device_id} did not answer within {COMMAND_TIMEOUT:g}s") from None
        finally:
            self.pending.pop(request_id, None)
        if answer.get("status") != "ok":
            raise CommandError("node_refused", f"{device_id}: {str(answer.get('error'))[:200]}")
        return dict(values)

    async def read(self, device_id: str, point: str) -> tuple[Value, int]:
        """A node cannot be asked now: its latest reading, with the node's own timestamp."""
        device = self.nodes[device_id]
        if point in device.errors:
            error = device.errors[point]
            code = error if error in NUMBER_ERRORS else "no_value"
            raise CommandError(code, f"{device_id}.{point}: the last reading failed ({error})", point)
        if point not in device.values or device.ts is None:
            raise CommandError("no_value", f"{device_id} has sent no reading of {point} yet", point)
        return device.values[point], device.ts

    async def on_result(self, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        node_id = topic[len(self.prefix) + 1 :].split("/", maxsplit=1)[0]
        raw = message.payload if isinstance(message.payload, bytes | bytearray) else b""
        try:
            data = parse_json(raw, max_bytes=MAX_NODE_PAYLOAD)
        except InputError as exc:
            self.garbage += 1
            self.faults.reject(f"node_{exc.code}", topic, exc)
            return
        request_id = data.get("id") if isinstance(data, dict) else None
        pending = self.pending.get(request_id) if isinstance(request_id, str) else None
        if pending is None:
            return  # an answer to nothing we are waiting for (late, or someone else's)
        owner, future = pending
        if owner != node_id:
            self.faults.reject("node_foreign_result", topic, f"answer to a request sent to {owner}")
            return
        if not future.done():
            future.set_result(data)

    def status(self) -> dict[str, Any]:
        online = sum(1 for d in self.nodes.values() if d.health.online)
        return {
            "online": online,
            "offline": len(self.nodes) - online,
            "rejected_messages": self.garbage,
            "unknown": sorted(self.unknown)[:20],
        }


def _readings(
    resolved: ResolvedProfile, values_in: Mapping[str, Any], errors_in: Mapping[str, Any]
) -> tuple[dict[str, Value], dict[str, str]]:
    """The profile's points from one telemetry message: values that fit, and why the others do not."""
    values: dict[str, Value] = {}
    errors: dict[str, str] = {}
    for p in resolved.points:
        if not p.access.readable:
            continue
        key = _key(p)
        if key in values_in:
            value = values_in[key]
            problem = _misfit(p.dtype, value) or ("implausible" if p.implausible(value) else None)
            if problem is None:
                values[p.name] = value
            else:
                errors[p.name] = problem
        elif key in errors_in:
            errors[p.name] = str(errors_in[key])[:80]
    return values, errors


def _key(point: PointSpec) -> str:
    """The name a point travels under in the node's telemetry and commands."""
    attributes: NodeKey = point.attributes
    return attributes.key


def _misfit(dtype: DataType, value: object) -> str | None:
    """Why `value` cannot be this point's reading, or None when it can."""
    if isinstance(value, BadNumber):
        return value.reason
    if dtype is DataType.BOOL:
        return None if isinstance(value, bool) else f"bad value {str(value)[:40]!r}"
    if dtype is DataType.STRING or dtype is DataType.ENUM:
        return None if isinstance(value, str) and len(value) <= 256 else f"bad value {str(value)[:40]!r}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"bad value {str(value)[:40]!r}"
    return None if abs(value) < 1e15 else "too_large"  # a reading, not an absurd number
