"""The command service: every command to every device, from any client, goes through here.

Values are checked against the profile before anything touches a bus; controls marked
`control: sbo` need select-before-operate (a selection bound to its requester, with an
expiry); a transaction id is used once; every command and its outcome becomes an audit
event; the checked values go to the source that runs the device (a polled link, an ESP32
node). The MQTT tree, and later the dashboard, the automation and Sparkplug, are thin
adapters around `CommandService.execute`.

Every refusal has a stable code, the same on MQTT `set/result`, in `cityedge write`
and in audit events: unknown_device, unknown_point, read_only, bad_type,
out_of_range, device_offline, timeout, select_required, select_expired,
duplicate_transaction, and the refusal code of the device's protocol, ...
"""

from __future__ import annotations

import asyncio
import math
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.core.events import CommandAudited, EventBus
from gateway.points.types import DataType, PointValueError, Value
from gateway.profiles.expand import PointSpec

MAX_VALUES = 32  # points one command may write
RECENT_TRANSACTIONS = 10_000  # transaction ids remembered to refuse replays


class CommandError(Exception):
    def __init__(
        self,
        code: str,
        message: str,
        point: str | None = None,
        exception_code: int | None = None,
        details: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.point, self.exception_code = code, message, point, exception_code
        self.details = details

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"code": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        if self.point is not None:
            out["point"] = self.point
        if self.exception_code is not None:
            out["exception_code"] = self.exception_code
        return out


def check_value(point: PointSpec, value: object) -> Value:
    """The value to write, or CommandError(bad_type | out_of_range | read_only)."""
    name = point.name
    if not point.access.writable:
        raise CommandError("read_only", f"{name} is read-only", name)
    dtype = point.dtype
    if dtype in (DataType.BOOL, DataType.BIT):
        if isinstance(value, bool):
            return value
        raise CommandError("bad_type", f"{name} takes true or false, got {_shown(value)}", name)
    if dtype is DataType.ENUM:
        choices = dict(point.enum or {})
        if isinstance(value, str) and value in choices.values():
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value in choices:
            return choices[value]
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise CommandError(
                "bad_type", f"{name} takes one of {', '.join(choices.values())}, got {_shown(value)}", name
            )
        raise CommandError("out_of_range", f"{name} takes one of {', '.join(choices.values())}, got {value!r}", name)
    if dtype is DataType.STRING:
        if not isinstance(value, str):
            raise CommandError("bad_type", f"{name} takes text, got {_shown(value)}", name)
        _encode(point, value)
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CommandError("bad_type", f"{name} takes a number, got {_shown(value)}", name)
    if (point.min is not None and value < point.min) or (point.max is not None and value > point.max):
        low = "" if point.min is None else f"{point.min:g}"
        high = "" if point.max is None else f"{point.max:g}"
        raise CommandError("out_of_range", f"{name} must be within {low}..{high}, got {value}", name)
    _encode(point, value)
    return value


def find_point(devices: Devices | Mapping[str, Any], device_id: str, name: str) -> tuple[Any, PointSpec]:
    """The device and its point; CommandError(unknown_device | unknown_point) when either is not there."""
    device = devices.get(device_id)
    if device is None:
        raise CommandError("unknown_device", f"no device '{device_id}'")
    point = device.resolved.point(name)
    if point is None:
        raise CommandError("unknown_point", f"{device_id} has no point '{name}'", name)
    return device, point


def _encode(point: PointSpec, value: Value) -> None:
    try:
        point.check_write(value)
    except PointValueError as exc:
        code = "bad_type" if "expected" in str(exc) else "out_of_range"
        raise CommandError(code, f"{point.name}: {exc}", point.name) from None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Source(Protocol):
    """What runs devices, as the command service sees it."""

    async def write(self, device_id: str, values: Mapping[str, Value], *, readback: bool) -> dict[str, Value | None]:
        """Write checked values in order; what each point reads back (readback) or None. CommandError on failure."""
        ...

    async def read(self, device_id: str, point: str) -> tuple[Value, int]:
        """The point's value now, and its epoch-ms timestamp. CommandError when there is none."""
        ...


class Devices(Protocol):
    """The device registry the service checks commands against (the live state store)."""

    def get(self, device_id: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class Command:
    device: str
    transaction: str | None
    values: Mapping[str, object] | None = None  # points to write ...
    select: Mapping[str, object] | None = None  # ... or the one control to select
    token: object = None  # the selection's token, to operate
    readback: bool = False
    requester: str | None = None  # who may operate a selection made by this command (an MQTT 5 response topic)
    sender: Mapping[str, Any] | None = None  # what identifies the sender, for the audit


@dataclass(slots=True)
class Selection:
    point: str
    value: Value
    token: str
    expires: float
    requester: str | None


class CommandService:
    def __init__(
        self,
        bus: EventBus,
        devices: Devices,
        sbo_timeout: Callable[[], float],
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.bus = bus
        self.devices = devices
        self.sbo_timeout = sbo_timeout  # read at each select, so a reload changes it
        self.clock = clock or (lambda: asyncio.get_running_loop().time())
        self.sources: dict[str, Source] = {}
        self.selections: dict[str, Selection] = {}
        self.recent: OrderedDict[tuple[str, str], None] = OrderedDict()

    def add_source(self, name: str, source: Source) -> None:
        """Devices whose `source` is `name` are written and read through `source`."""
        self.sources[name] = source

    async def execute(self, command: Command) -> dict[str, Any]:
        """The answer to the command (ok or a refusal with its code); its audit record is published."""
        try:
            body = await self._execute(command)
        except CommandError as exc:
            body = {"transaction": command.transaction, "status": "error", "error": exc.to_json()}
        self.audit(command, body)
        return body

    def refuse(self, command: Command, error: CommandError) -> dict[str, Any]:
        """A command refused before it could be read (bad JSON, busy): the answer, audited like any other."""
        body = {"transaction": command.transaction, "status": "error", "error": error.to_json()}
        self.audit(command, body)
        return body

    def audit(self, command: Command, body: Mapping[str, Any]) -> None:
        self.bus.publish(
            CommandAudited(
                command.device,
                command.transaction,
                body["status"],
                values=command.values if isinstance(command.values, Mapping) else None,
                select=command.select if isinstance(command.select, Mapping) else None,
                error=body.get("error"),
                sender=command.sender or None,
                selected=_selected(command, body),
            )
        )

    async def read(self, device_id: str, point: str) -> tuple[Value, int]:
        device, spec = self._point(device_id, point)
        if not spec.access.readable:
            raise CommandError("write_only", f"{point} can be written but not read", point)
        return await self._source(device).read(device_id, point)

    # -- the checks -----------------------------------------------------------------------------

    async def _execute(self, command: Command) -> dict[str, Any]:
        device = self.devices.get(command.device)
        if device is None:
            raise CommandError("unknown_device", f"no device '{command.device}'")
        if (command.values is None) == (command.select is None):
            raise CommandError("bad_json", "give either values (to write) or select (to select a control)")
        requested = command.values if command.values is not None else command.select
        if not isinstance(requested, Mapping) or not requested or len(requested) > MAX_VALUES:
            raise CommandError("bad_json", f"values must be an object of 1 to {MAX_VALUES} points")
        self._remember(command.device, command.transaction)
        checked: dict[str, tuple[PointSpec, Value]] = {}
        for name, value in requested.items():
            _, point = self._point(command.device, str(name))
            checked[point.name] = (point, check_value(point, value))
        if command.select is not None:
            return self._select(command, checked)
        self._check_operate(command, checked)
        if device.health.known and device.health.state_name == "offline":
            reason = device.health.to_json().get("reason")
            raise CommandError("device_offline", f"{command.device} is offline ({reason})")
        values = {name: value for name, (_, value) in checked.items()}
        written = await self._source(device).write(command.device, values, readback=command.readback)
        if not command.readback:
            written = dict(values)
        return {"transaction": command.transaction, "status": "ok", "values": written}

    def _point(self, device_id: str, name: str) -> tuple[Any, PointSpec]:
        return find_point(self.devices, device_id, name)

    def _source(self, device: Any) -> Source:
        return self.sources[device.source]

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

    def _select(self, command: Command, checked: dict[str, tuple[PointSpec, Value]]) -> dict[str, Any]:
        if len(checked) != 1:
            raise CommandError("bad_json", "select one control at a time")
        ((name, (point, value)),) = checked.items()
        if not point.sbo:
            raise CommandError("bad_request", f"{name} does not need select-before-operate; write it directly", name)
        timeout = self.sbo_timeout()
        token = secrets.token_hex(8)
        self.selections[command.device] = Selection(name, value, token, self.clock() + timeout, command.requester)
        return {"transaction": command.transaction, "status": "ok", "token": token, "expires_ms": int(timeout * 1000)}

    def _check_operate(self, command: Command, checked: dict[str, tuple[PointSpec, Value]]) -> None:
        controls = [name for name, (point, _) in checked.items() if point.sbo]
        if not controls:
            return
        selection = self.selections.pop(command.device, None)  # any operate ends the selection, right or wrong
        name, token = controls[0], command.token
        if len(checked) != 1:
            raise CommandError("bad_json", f"{name} needs select-before-operate and must be operated alone", name)
        if token is None or selection is None:
            raise CommandError("select_required", f"{name} needs select-before-operate: select it first", name)
        if not isinstance(token, str) or not secrets.compare_digest(token, selection.token):
            raise CommandError("select_expired", "unknown or cancelled selection token; select again", name)
        if selection.requester is not None and command.requester != selection.requester:
            raise CommandError(
                "select_expired",
                "the selection was made with another response topic; only its requester may operate; select again",
                name,
            )
        if self.clock() > selection.expires:
            raise CommandError(
                "select_expired", f"the selection expired after {self.sbo_timeout():g}s; select again", name
            )
        if selection.point != name or selection.value != checked[name][1]:
            raise CommandError(
                "select_expired", f"the selection was for {selection.point}={selection.value!r}; it is cancelled", name
            )


def _selected(command: Command, body: Mapping[str, Any]) -> dict[str, Any] | None:
    """A selection that was made, as the audit record tells it: which control, for how long, for whom.
    Never its token: that goes to the requester alone (the answer), so nobody else can operate it."""
    if "token" not in body or not isinstance(command.select, Mapping):
        return None
    (point,) = command.select
    out: dict[str, Any] = {"point": point, "expires_ms": body["expires_ms"]}
    if command.requester:
        out["answered_to"] = command.requester
    return out
