"""Commands: `<base>/<device>/set`, validated, written through the link's priority lane, answered once.

`{"transaction": "t1", "values": {"ballast_3_arc_power": 40}}` writes; add `"readback": true`
to read the values back. Points marked `control: sbo` need select-before-operate:
`{"transaction": "t2", "select": {"breaker_command": "open"}}` answers with a token,
valid for `gateway.sbo_timeout`; `{"transaction": "t3", "values": {"breaker_command": "open"},
"token": "..."}` operates. Any other operate on the device, or the timeout, cancels
the selection. Every command and its outcome is also an audit record on `<base>/event`.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import aiomqtt

from gateway.core.commands import CommandError, check_value
from gateway.core.events import Notable
from gateway.north.extensions.base import Extension
from gateway.north.replies import answer, error_body, parse, transaction_of
from gateway.points.codec import Value

MAX_VALUES = 32
RECENT_TRANSACTIONS = 10_000


@dataclass
class Selection:
    point: str
    value: Value
    token: str
    expires: float


class Commands(Extension):
    def start(self) -> None:
        self.selections: dict[str, Selection] = {}
        self.recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.ctx.mqtt.handle(f"{self.ctx.base}/+/set", self.on_set)

    def _device_of(self, topic: str) -> str:
        return topic[len(self.ctx.base) + 1 : -len("/set")]

    async def on_set(self, message: aiomqtt.Message) -> None:
        device = self._device_of(str(message.topic))
        result_topic = f"{self.ctx.base}/{device}/set/result"
        transaction: str | None = None
        data: dict[str, Any] = {}
        try:
            data, transaction = parse(message, {"values", "select", "token", "readback"})
            body = await self._execute(device, data, transaction)
        except CommandError as exc:
            transaction = transaction or transaction_of(message)
            body = error_body(transaction, exc)
        answer(self.ctx.mqtt, message, result_topic, body)
        audit = {"device": device, "transaction": transaction, "status": body["status"]}
        for key in ("values", "select"):
            if isinstance(data.get(key), dict):
                audit[key] = data[key]
        if "error" in body:
            audit["error"] = body["error"]
        self.ctx.bus.publish(Notable("command", audit))

    async def _execute(self, device: str, data: dict[str, Any], transaction: str | None) -> dict[str, Any]:
        node = device in self.ctx.loaded.nodes and self.ctx.node_commands is not None
        if device not in self.ctx.engine.devices and not node:
            raise CommandError("unknown_device", f"no device '{device}'")
        if ("values" in data) == ("select" in data):
            raise CommandError("bad_json", "give either values (to write) or select (to select a control)")
        requested = data.get("values", data.get("select"))
        if not isinstance(requested, dict) or not requested or len(requested) > MAX_VALUES:
            raise CommandError("bad_json", f"values must be an object of 1 to {MAX_VALUES} points")
        if node and self.ctx.node_commands is not None:
            if "select" in data:
                raise CommandError("bad_request", "nodes have no select-before-operate controls")
            self._remember(device, transaction)
            sent = await self.ctx.node_commands(device, requested, transaction)
            return {"transaction": transaction, "status": "ok", "values": sent}
        self._remember(device, transaction)
        checked = {}
        for name, value in requested.items():
            _, point = self.ctx.engine.point(device, str(name))
            checked[point.name] = (point, check_value(point, value))
        if "select" in data:
            return self._select(device, checked, transaction)
        self._check_operate(device, checked, data.get("token"))
        written: dict[str, Value | None] = {}
        readback = data.get("readback") is True
        for name, (_, value) in checked.items():
            written[name] = await self.ctx.engine.write(device, name, value, readback=readback)
            if not readback:
                written[name] = value
        return {"transaction": transaction, "status": "ok", "values": written}

    def _remember(self, device: str, transaction: str | None) -> None:
        """A transaction id is used once: a replayed command is refused, never executed twice."""
        if transaction is None:
            return
        key = (device, transaction)
        if key in self.recent:
            raise CommandError("duplicate_transaction", f"transaction {transaction!r} was already received")
        self.recent[key] = None
        while len(self.recent) > RECENT_TRANSACTIONS:
            self.recent.popitem(last=False)

    def _select(self, device: str, checked: dict[str, Any], transaction: str | None) -> dict[str, Any]:
        if len(checked) != 1:
            raise CommandError("bad_json", "select one control at a time")
        ((name, (point, value)),) = checked.items()
        if not point.sbo:
            raise CommandError("bad_request", f"{name} does not need select-before-operate; write it directly", name)
        timeout = self.ctx.loaded.config.gateway.sbo_timeout
        token = secrets.token_hex(8)
        self.selections[device] = Selection(name, value, token, asyncio.get_running_loop().time() + timeout)
        return {"transaction": transaction, "status": "ok", "token": token, "expires_ms": int(timeout * 1000)}

    def _check_operate(self, device: str, checked: dict[str, Any], token: object) -> None:
        controls = [name for name, (point, _) in checked.items() if point.sbo]
        if not controls:
            return
        selection = self.selections.pop(device, None)  # any operate ends the selection, right or wrong
        name = controls[0]
        if len(checked) != 1:
            raise CommandError("bad_json", f"{name} needs select-before-operate and must be operated alone", name)
        if token is None or selection is None:
            raise CommandError("select_required", f"{name} needs select-before-operate: select it first", name)
        if not isinstance(token, str) or not secrets.compare_digest(token, selection.token):
            raise CommandError("select_expired", "unknown or cancelled selection token; select again", name)
        if asyncio.get_running_loop().time() > selection.expires:
            raise CommandError(
                "select_expired",
                f"the selection expired after {self.ctx.loaded.config.gateway.sbo_timeout:g}s; select again",
                name,
            )
        if selection.point != name or selection.value != checked[name][1]:
            raise CommandError(
                "select_expired", f"the selection was for {selection.point}={selection.value!r}; it is cancelled", name
            )
