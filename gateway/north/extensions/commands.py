"""Commands on `<base>/<device>/set`: parsed, handed to the command service, answered once.

`{"transaction": "t1", "values": {"ballast_3_arc_power": 40}}` writes; add `"readback": true`
to read the values back. Points marked `control: sbo` need select-before-operate:
`{"transaction": "t2", "select": {"breaker_command": "open"}}` answers with a token,
valid for `gateway.sbo_timeout`; `{"transaction": "t3", "values": {"breaker_command": "open"},
"token": "..."}` operates. The checks, the selections and the audit records are the
command service's (`gateway/core/commands.py`); this adapter reads MQTT: the payload,
the MQTT 5 response topic (the requester a selection belongs to) and what identifies
the sender. Every message gets exactly one answer (`busy` when 4096 already wait).
"""

from __future__ import annotations

from typing import Any

import aiomqtt

from gateway.core.commands import Command, CommandError
from gateway.north.extensions.base import Extension
from gateway.north.mqtt import response_info
from gateway.north.replies import answer, busy_error, internal_error, parse, transaction_of

WORKERS = 64  # commands being executed at once (most wait for their link's priority lane)
WAITING = 4096  # commands queued behind them; beyond this each is answered `busy`
FIELDS = {"values", "select", "token", "readback"}


class Commands(Extension):
    def start(self) -> None:
        self.mqtt.handle(f"{self.ctx.base}/+/set", self.on_set, refuse=self.on_busy, limit=WAITING, workers=WORKERS)

    def _device_of(self, topic: str) -> str:
        return topic[len(self.ctx.base) + 1 : -len("/set")]

    async def on_set(self, message: aiomqtt.Message) -> None:
        device = self._device_of(str(message.topic))
        if device == "response":  # our own answer to a request named `set` (MQTT 3.1.1 has no "no local")
            return
        service = self.ctx.commands
        try:
            data, transaction = parse(message, FIELDS)
        except CommandError as exc:
            body = service.refuse(self._command(message, device, transaction_of(message)), exc)
        else:
            command = self._command(message, device, transaction, data)
            try:
                body = await service.execute(command)
            except Exception as exc:  # whatever happened, the operator hears back exactly once
                self.ctx.faults.reject("command_failed", str(message.topic), f"{type(exc).__name__}: {exc}")
                body = service.refuse(command, internal_error(exc))
        answer(self.mqtt, message, f"{self.ctx.base}/{device}/set/result", body)

    def on_busy(self, message: aiomqtt.Message) -> None:
        device = self._device_of(str(message.topic))
        body = self.ctx.commands.refuse(self._command(message, device, transaction_of(message)), busy_error("commands"))
        answer(self.mqtt, message, f"{self.ctx.base}/{device}/set/result", body)

    @staticmethod
    def _command(
        message: aiomqtt.Message, device: str, transaction: str | None, data: dict[str, Any] | None = None
    ) -> Command:
        data = data or {}
        values, select = data.get("values"), data.get("select")
        return Command(
            device,
            transaction,
            values=values if "values" in data else None,
            select=select if "select" in data else None,
            token=data.get("token"),
            readback=data.get("readback") is True,
            requester=response_info(message)[0],
            sender=sender_of(message) or None,
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
