"""Commands: `<base>/<device>/set`, validated, written through the link's priority lane, answered once.

`{"transaction": "t1", "values": {"ballast_3_arc_power": 40}}` writes; add `"readback": true`
to read the values back. Points marked `control: sbo` need select-before-operate:
`{"transaction": "t2", "select": {"breaker_command": "open"}}` answers with a token,
valid for `gateway.sbo_timeout`; `{"transaction": "t3", "values": {"breaker_command": "open"},
"token": "..."}` operates. Any other operate on the device, or the timeout, cancels
the selection; a select made with an MQTT 5 response topic can only be operated from
it. Every message gets exactly one answer (`busy` when 4096 already wait), and every
command and its outcome is an audit record on `<base>/event`, with its sender.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import aiomqtt

from gateway.core.commands import CommandError, check_value
from gateway.core.events import CommandAudited
from gateway.north.extensions.base import Extension
from gateway.north.mqtt import response_info
from gateway.north.replies import answer, busy_error, error_body, internal_error, parse, transaction_of
from gateway.points.codec import Value

MAX_VALUES = 32
RECENT_TRANSACTIONS = 10_000
WORKERS = 64  # commands being executed at once (most wait for their link's priority lane)
WAITING = 4096  # commands queued behind them; beyond this each is answered `busy`


@dataclass
class Selection:
    point: str
    value: Value
    token: str
    expires: float
    requester: str | None  # the MQTT 5 response topic the select came with: only that requester may operate


class Commands(Extension):
    def start(self) -> None:
        self.selections: dict[str, Selection] = {}
        self.recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.ctx.mqtt.handle(f"{self.ctx.base}/+/set", self.on_set, refuse=self.on_busy, limit=WAITING, workers=WORKERS)

    def _device_of(self, topic: str) -> str:
        return topic[len(self.ctx.base) + 1 : -len("/set")]

    async def on_set(self, message: aiomqtt.Message) -> None:
        device = self._device_of(str(message.topic))
        if device == "response":  # our own answer to a request named `set` (MQTT 3.1.1 has no "no local")
            return
        transaction: str | None = None
        data: dict[str, Any] = {}
        try:
            data, transaction = parse(message, {"values", "select", "token", "readback"})
            body = await self._execute(device, data, transaction, response_info(message)[0])
        except CommandError as exc:
            body = error_body(transaction or transaction_of(message), exc)
        except Exception as exc:  # whatever happened, the operator hears back exactly once
            self.ctx.faults.reject("command_failed", str(message.topic), f"{type(exc).__name__}: {exc}")
            body = error_body(transaction or transaction_of(message), internal_error(exc))
        self._finish(message, device, data, body)

    def on_busy(self, message: aiomqtt.Message) -> None:
        device = self._device_of(str(message.topic))
        self._finish(message, device, {}, error_body(transaction_of(message), busy_error("commands")))

    def _finish(self, message: aiomqtt.Message, device: str, data: dict[str, Any], body: dict[str, Any]) -> None:
        """The one answer, and the audit record of what was asked, by whom, and what came of it."""
        answer(self.ctx.mqtt, message, f"{self.ctx.base}/{device}/set/result", body)
        asked = {key: data[key] if isinstance(data.get(key), dict) else None for key in ("values", "select")}
        audit = CommandAudited(
            device,
            body["transaction"],
            body["status"],
            **asked,
            error=body.get("error"),
            sender=sender_of(message) or None,
        )
        self.ctx.bus.publish(audit)

    async def _execute(
        self, device: str, data: dict[str, Any], transaction: str | None, requester: str | None
    ) -> dict[str, Any]:
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
            return self._select(device, checked, transaction, requester)
        self._check_operate(device, checked, data.get("token"), requester)
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

    def _select(
        self, device: str, checked: dict[str, Any], transaction: str | None, requester: str | None
    ) -> dict[str, Any]:
        if len(checked) != 1:
            raise CommandError("bad_json", "select one control at a time")
        ((name, (point, value)),) = checked.items()
        if not point.sbo:
            raise CommandError("bad_request", f"{name} does not need select-before-operate; write it directly", name)
        timeout = self.ctx.loaded.config.gateway.sbo_timeout
        token = secrets.token_hex(8)
        expires = asyncio.get_running_loop().time() + timeout
        self.selections[device] = Selection(name, value, token, expires, requester)
        return {"transaction": transaction, "status": "ok", "token": token, "expires_ms": int(timeout * 1000)}

    def _check_operate(self, device: str, checked: dict[str, Any], token: object, requester: str | None) -> None:
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
        if selection.requester is not None and requester != selection.requester:
            raise CommandError(
                "select_expired",
                "the selection was made with another response topic; only its requester may operate; select again",
                name,
            )
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


def sender_of(message: aiomqtt.Message) -> dict[str, Any]:
    """What the command carried that identifies its sender (MQTT 5 response topic and user properties)."""
    topic, correlation = response_info(message)
    out: dict[str, Any] = {}
    if topic:
        out["response_topic"] = topic[:256]
    if correlation is not None:
        out["correlation_data"] = bytes(correlation)[:64].hex()
    pairs = getattr(message.properties, "UserProperty", None) if message.properties else None
    if pairs:
        out["user_properties"] = {str(k)[:64]: str(v)[:256] for k, v in list(pairs)[:16]}
    return out
