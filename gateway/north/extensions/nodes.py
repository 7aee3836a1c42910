"""ESP32 nodes as devices: `nodes/<id>/...` in, the gateway's uniform tree out.

Every configured node becomes a device under `<base>/<node>/` with state, availability
and health, mapped through its node profile (telemetry key -> point). Payloads are
checked (size, depth, shape, types, a plausible timestamp); garbage is counted and
logged, never trusted, and a NaN or infinite reading is an error of its point. A node
answers commands only for itself. A node is
offline on its Will or when silent for `stale_after`. Commands on `<base>/<node>/set`
are validated against the profile and forwarded to `nodes/<id>/cmd`; the node's answer
comes back on `set/result`. Nodes that are not configured are reported on `<base>/event`,
not adopted. The gateway also publishes its clock on `nodes/time`, the nodes' fallback
when NTP is out of reach.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from gateway.core.commands import CommandError, check_value
from gateway.core.events import DeviceOffline, DeviceOnline, UnknownNode
from gateway.core.inputs import BadNumber, InputError, parse_json, without_bad_numbers
from gateway.north.acl import NODE_PREFIX
from gateway.north.extensions.base import Extension
from gateway.north.message import Kind
from gateway.points.codec import DataType, Value
from gateway.profiles.expand import ResolvedProfile

PREFIX = NODE_PREFIX
MAX_NODE_PAYLOAD = 8 * 1024
MAX_UNKNOWN = 1000
MAX_NODE_ID = 64
NODE_WAITING = 10_000  # node messages queued for the bridge; a flood beyond this is counted and dropped
COMMAND_TIMEOUT = 10.0
EARLIEST_TS = 946_684_800_000  # 2000-01-01: an ESP32 that has not learnt the time yet counts from here
FUTURE_MS = 86_400_000  # a node clock a day ahead of ours is wrong, not early


@dataclass
class NodeState:
    resolved: ResolvedProfile
    stale_after: float
    online: bool | None = None
    reason: str | None = None
    last_seen: float = 0.0
    last_seq: int | None = None
    health: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    rejected: int = 0
    gaps: int = 0


class NodeBridge(Extension):
    def start(self) -> None:
        self.nodes: dict[str, NodeState] = {}
        self.garbage = 0
        self.unknown: set[str] = set()
        self.pending: dict[str, tuple[str, asyncio.Future[dict[str, Any]]]] = {}
        self._load()
        for kind in ("telemetry", "status", "health", "info"):
            self.ctx.mqtt.handle(f"{PREFIX}/+/{kind}", self.on_message, limit=NODE_WAITING)
        self.ctx.mqtt.handle(f"{PREFIX}/+/cmd/result", self.on_result, limit=NODE_WAITING)
        self.ctx.mqtt.on_connect(self.publish_all)
        self.ctx.node_commands = self.command
        self.ctx.health_sections["nodes"] = self.status
        self.every_health_interval(self._periodic)

    def _load(self) -> None:
        loaded = self.ctx.loaded
        old = self.nodes
        self.nodes = {}
        for node in loaded.config.nodes:
            if node.enabled and node.id in loaded.nodes:
                state = old.get(node.id) or NodeState(loaded.nodes[node.id], node.stale_after)
                state.resolved, state.stale_after = loaded.nodes[node.id], node.stale_after
                self.nodes[node.id] = state

    def reloaded(self) -> None:
        self._load()

    # -- incoming ---------------------------------------------------------------------------------

    async def on_message(self, message: aiomqtt.Message) -> None:
        parts = str(message.topic).split("/")
        if len(parts) != 3:
            return
        node_id, kind = parts[1], parts[2]
        state = self.nodes.get(node_id)
        if state is None:
            if len(node_id) > MAX_NODE_ID:
                self.ctx.faults.reject("node_bad_topic", str(message.topic)[:100], "node id longer than 64")
            elif node_id not in self.unknown and len(self.unknown) < MAX_UNKNOWN:
                self.unknown.add(node_id)
                self.ctx.bus.publish(UnknownNode(node_id, str(message.topic)))
            return
        raw = message.payload if isinstance(message.payload, bytes | bytearray) else str(message.payload).encode()
        try:
            if kind == "status":
                if raw not in (b"online", b"offline"):
                    raise InputError("bad_status", "status is online or offline")
                self._set_online(node_id, state, raw == b"online", "will" if raw == b"offline" else None)
                return
            data = parse_json(raw, max_bytes=MAX_NODE_PAYLOAD)
            if not isinstance(data, dict):
                raise InputError("bad_json", "not a JSON object")
            if kind == "telemetry":
                self._telemetry(node_id, state, data)
            elif kind == "health":
                state.health = self._free_form(node_id, kind, data)
                self._publish_health(node_id, state)
            elif kind == "info":
                state.info = self._free_form(node_id, kind, data)
            state.last_seen = time.monotonic()
            if state.online is not True:
                self._set_online(node_id, state, True, None)
        except InputError as exc:
            self.garbage += 1
            state.rejected += 1
            self.ctx.faults.reject(f"node_{exc.code}", str(message.topic), exc)

    def _free_form(self, node_id: str, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        """A node's own health or info, kept to republish: without numbers that mean nothing."""
        clean, removed = without_bad_numbers(data)
        if removed:
            self.ctx.faults.reject("node_not_finite", f"nodes/{node_id}/{kind}", f"{removed} non-finite value(s)")
        result: dict[str, Any] = clean
        return result

    def _telemetry(self, node_id: str, state: NodeState, data: dict[str, Any]) -> None:
        values_in, ts, seq = data.get("values"), data.get("ts"), data.get("seq")
        if not isinstance(values_in, dict):
            raise InputError("bad_telemetry", "telemetry needs values (an object)")
        if not isinstance(ts, int) or isinstance(ts, bool) or not EARLIEST_TS <= ts <= time.time() * 1000 + FUTURE_MS:
            raise InputError("bad_timestamp", f"ts must be epoch milliseconds, got {str(ts)[:32]}")
        if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**53):
            raise InputError("bad_telemetry", "seq must be a non-negative integer")
        values: dict[str, Value] = {}
        errors: dict[str, str] = {}
        errors_in = data.get("errors")
        node_errors: dict[str, Any] = errors_in if isinstance(errors_in, dict) else {}
        for p in state.resolved.points:
            if not p.access.readable or p.key is None:
                continue
            if p.key in values_in:
                value = values_in[p.key]
                problem = _misfit(p.dtype, value)
                if problem is None:
                    values[p.name] = value
                else:
                    errors[p.name] = problem
            elif p.key in node_errors:
                errors[p.name] = str(node_errors[p.key])[:80]
        if seq is not None:
            if state.last_seq is not None and seq > state.last_seq + 1:
                state.gaps += seq - state.last_seq - 1
            state.last_seq = max(seq, state.last_seq or 0)
        payload: dict[str, Any] = {"ts": ts, "values": values}
        if seq is not None:
            payload["seq"] = seq
        if errors:
            payload["errors"] = errors
        self.ctx.mqtt.publish(f"{self.ctx.base}/{node_id}/state", payload, Kind.TELEMETRY, ts=ts)

    def _set_online(self, node_id: str, state: NodeState, online: bool, reason: str | None) -> None:
        if state.online == online:
            return
        previous = state.online
        state.online, state.reason = online, reason
        self._publish_health(node_id, state)
        if previous is not None or not online:
            self.ctx.bus.publish(DeviceOnline(node_id) if online else DeviceOffline(node_id, reason))

    def _publish_health(self, node_id: str, state: NodeState) -> None:
        base, mqtt = self.ctx.base, self.ctx.mqtt
        mqtt.publish(
            f"{base}/{node_id}/availability",
            b"online" if state.online else b"offline",
            Kind.CONTROL,
            retain=True,
            qos=1,
        )
        health = {
            "state": "online" if state.online else "offline",
            "reason": state.reason,
            "rejected_messages": state.rejected,
            "sequence_gaps": state.gaps,
            "node": state.health,
        }
        mqtt.publish(f"{base}/{node_id}/health", health, Kind.CONTROL, retain=True, qos=1)

    def publish_all(self) -> None:
        for node_id, state in self.nodes.items():
            if state.online is not None:
                self._publish_health(node_id, state)
        self._publish_time()

    def _publish_time(self) -> None:
        self.ctx.mqtt.publish(f"{PREFIX}/time", {"ts": int(time.time() * 1000)}, Kind.CONTROL, retain=True, qos=0)

    def _periodic(self) -> None:
        now = time.monotonic()
        for node_id, state in self.nodes.items():
            if state.online and now - state.last_seen > state.stale_after:
                self._set_online(node_id, state, False, "stale")
        self._publish_time()

    # -- commands ---------------------------------------------------------------------------------

    async def command(self, node_id: str, requested: dict[str, Any], transaction: str | None) -> dict[str, Value]:
        """Validate against the node profile, send to the node, wait for its answer."""
        state = self.nodes.get(node_id)
        if state is None:
            raise CommandError("unknown_device", f"no node '{node_id}'")
        changes: dict[str, Any] = {}
        checked: dict[str, Value] = {}
        points = {p.name: p for p in state.resolved.points}
        for name, value in requested.items():
            point = points.get(name)
            if point is None:
                raise CommandError("unknown_point", f"{node_id} has no point '{name}'", name)
            checked[name] = check_value(point, value)
            changes[point.key or name] = checked[name]
        if not state.online:
            raise CommandError("device_offline", f"{node_id} is offline ({state.reason})")
        # Our own unguessable id, not the operator's transaction: only this node, answering this request, counts.
        request_id = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = (node_id, future)
        try:
            self.ctx.mqtt.publish(
                f"{PREFIX}/{node_id}/cmd", {"id": request_id, "cmd": "config", "set": changes}, Kind.REPLY, qos=1
            )
            answer = await asyncio.wait_for(future, COMMAND_TIMEOUT)
        except TimeoutError:
            raise CommandError("timeout", f"{node_id} did not answer within {COMMAND_TIMEOUT:g}s") from None
        finally:
            self.pending.pop(request_id, None)
        if answer.get("status") != "ok":
            raise CommandError("node_refused", f"{node_id}: {str(answer.get('error'))[:200]}")
        return checked

    async def on_result(self, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        node_id = topic.split("/")[1]
        raw = message.payload if isinstance(message.payload, bytes | bytearray) else b""
        try:
            data = parse_json(raw, max_bytes=MAX_NODE_PAYLOAD)
        except InputError as exc:
            self.garbage += 1
            self.ctx.faults.reject(f"node_{exc.code}", topic, exc)
            return
        request_id = data.get("id") if isinstance(data, dict) else None
        pending = self.pending.get(request_id) if isinstance(request_id, str) else None
        if pending is None:
            return  # an answer to nothing we are waiting for (late, or someone else's)
        owner, future = pending
        if owner != node_id:
            self.ctx.faults.reject("node_foreign_result", topic, f"answer to a request sent to {owner}")
            return
        if not future.done():
            future.set_result(data)

    def status(self) -> dict[str, Any]:
        online = sum(1 for s in self.nodes.values() if s.online)
        return {
            "online": online,
            "offline": len(self.nodes) - online,
            "rejected_messages": self.garbage,
            "unknown": sorted(self.unknown)[:20],
        }


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
