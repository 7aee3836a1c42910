"""The event stream between the core and everything around it (publishers, health, discovery, automation).

Features subscribe to the event types they care about; the core knows nothing of
them. Handlers run synchronously and must not block: a publisher queues and returns.
A subscription to a class also receives its subclasses, so `Notable` (everything an
operator should hear about on `<base>/event`) receives every kind below it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from gateway.points.types import Value

log = logging.getLogger("cityedge.events")


@dataclass(slots=True)
class DeviceUpdate:
    """A device's values after a poll cycle (or a node's reading): good ones in values, failed ones in errors."""

    device: str
    ts: int  # epoch milliseconds
    values: Mapping[str, Value]
    errors: Mapping[str, str]
    received: float  # monotonic time the last answer arrived, for latency measurements
    seq: int | None = None  # a node's own sequence number


@dataclass(slots=True)
class HealthChanged:
    device: str
    state: str  # online | degraded | offline
    previous: str | None
    reason: str | None
    health: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Notable:
    """Something an operator should hear about: `kind` names it on `<base>/event`, `to_json()` is the rest."""

    kind: ClassVar[str] = "notable"

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True, slots=True)
class GatewayStarted(Notable):
    kind: ClassVar[str] = "started"
    devices: int
    links: int


@dataclass(frozen=True, slots=True)
class DeviceOffline(Notable):
    kind: ClassVar[str] = "device_offline"
    device: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class DeviceOnline(Notable):
    kind: ClassVar[str] = "device_online"
    device: str


@dataclass(frozen=True, slots=True)
class LinkDown(Notable):
    kind: ClassVar[str] = "link_down"
    link: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class LinkUp(Notable):
    kind: ClassVar[str] = "link_up"
    link: str


@dataclass(frozen=True, slots=True)
class CommandAudited(Notable):
    """The audit record of one command: what was asked, by whom, and what came of it."""

    kind: ClassVar[str] = "command"
    device: str
    transaction: str | None
    status: str  # ok | error
    values: Mapping[str, Any] | None = None
    select: Mapping[str, Any] | None = None
    error: Mapping[str, Any] | None = None
    sender: Mapping[str, Any] | None = None
    selected: Mapping[str, Any] | None = None  # a selection made: its point, token and lifetime

    def to_json(self) -> dict[str, Any]:
        out = Notable.to_json(self)
        out["transaction"] = self.transaction  # null too: the command had none we could read
        return out


@dataclass(frozen=True, slots=True)
class ReloadApplied(Notable):
    kind: ClassVar[str] = "reloaded"
    changes: Mapping[str, Any] = field(default_factory=dict)  # what restarted, what was added, removed, kept

    def to_json(self) -> dict[str, Any]:
        return dict(self.changes)


@dataclass(frozen=True, slots=True)
class ReloadRefused(Notable):
    kind: ClassVar[str] = "reload_refused"
    problems: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OutboxDropped(Notable):
    kind: ClassVar[str] = "outbox_dropped"
    dropped: Mapping[str, int]
    reason: str
    total_dropped: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class UnknownNode(Notable):
    kind: ClassVar[str] = "unknown_node"
    node: str
    topic: str


@dataclass(frozen=True, slots=True)
class ClientIdConflict(Notable):
    kind: ClassVar[str] = "client_id_conflict"
    broker: str
    client_id: str


E = TypeVar("E")
Handler = Callable[[Any], None]


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[type, list[Handler]] = defaultdict(list)
        self._resolved: dict[type, tuple[Handler, ...]] = {}  # per event type, its own and its bases' handlers

    def subscribe(self, kind: type[E], handler: Callable[[E], None]) -> Callable[[], None]:
        """Call `handler` for every event of `kind` (or a subclass); returns the function that undoes it."""
        self._handlers[kind].append(handler)
        self._resolved.clear()

        def unsubscribe() -> None:
            if handler in self._handlers[kind]:
                self._handlers[kind].remove(handler)
                self._resolved.clear()

        return unsubscribe

    def publish(self, event: object) -> None:
        kind = type(event)
        handlers = self._resolved.get(kind)
        if handlers is None:
            handlers = self._resolved[kind] = tuple(h for base in kind.__mro__ for h in self._handlers.get(base, ()))
        for handler in handlers:
            try:
                handler(event)
            except Exception:  # one broken subscriber must not stop polling
                log.exception("handler for %s failed", kind.__name__)
