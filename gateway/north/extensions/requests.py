"""Gateway-level requests: `<base>/request/<action>` answered on `<base>/response/<action>`.

Actions: `reload` (re-read the configuration; only changed links and devices restart;
an invalid file changes nothing and the answer lists its problems), `read` (one point,
now), `devices`, `health`, and those edge features add (`override`, `lighting`).
"""

from __future__ import annotations

from typing import Any

import aiomqtt

from gateway.common.problems import ConfigError
from gateway.core.commands import CommandError
from gateway.north.extensions.base import Extension
from gateway.north.extensions.devices import describe_devices
from gateway.north.replies import answer, busy_error, error_body, internal_error, parse, transaction_of

ACTIONS = ("reload", "read", "devices", "health")
FIELDS = {"device", "point", "target", "level", "duration", "until", "clear", "by", "alarm"}
WORKERS = 8
WAITING = 1024


class Requests(Extension):
    def start(self) -> None:
        self.mqtt.handle(
            f"{self.ctx.base}/request/+", self.on_request, refuse=self.on_busy, limit=WAITING, workers=WORKERS
        )

    async def on_request(self, message: aiomqtt.Message) -> None:
        action = str(message.topic).rpartition("/")[2]
        transaction: str | None = None
        try:
            data, transaction = parse(message, FIELDS)
            body = {"transaction": transaction, "status": "ok", "data": await self._do(action, data)}
        except CommandError as exc:
            body = error_body(transaction or transaction_of(message), exc)
        except Exception as exc:  # whatever happened, the sender hears back exactly once
            self.ctx.faults.reject("request_failed", str(message.topic), f"{type(exc).__name__}: {exc}")
            body = error_body(transaction or transaction_of(message), internal_error(exc))
        answer(self.mqtt, message, f"{self.ctx.base}/response/{action}", body)

    def on_busy(self, message: aiomqtt.Message) -> None:
        action = str(message.topic).rpartition("/")[2]
        body = error_body(transaction_of(message), busy_error("requests"))
        answer(self.mqtt, message, f"{self.ctx.base}/response/{action}", body)

    async def _do(self, action: str, data: dict[str, Any]) -> Any:
        if action == "reload":
            return await self._reload()
        if action == "read":
            device, point = data.get("device"), data.get("point")
            if not isinstance(device, str) or not isinstance(point, str):
                raise CommandError("bad_json", "read needs device and point")
            value, ts = await self.ctx.commands.read(device, point)
            return {"device": device, "point": point, "value": value, "ts": ts}
        if action == "devices":
            return describe_devices(self.ctx.store, self.ctx.loaded)
        if action in self.ctx.actions:
            return await self.ctx.actions[action](data)
        if action == "health":
            return self.ctx.store.gateway_health()
        known = ", ".join([*ACTIONS, *self.ctx.actions])
        raise CommandError("unknown_action", f"unknown action {action!r} (actions: {known})")

    async def _reload(self) -> dict[str, Any]:
        try:
            return await self.ctx.reload()  # announces itself on the bus, applied or refused
        except ConfigError as exc:
            problems = [str(p) for p in exc.problems]
            message = f"configuration not applied: {len(problems)} problem(s)"
            raise CommandError("invalid_config", message, details=problems) from None
