"""The event stream between the engine and everything north of it (MQTT, health, discovery, ...).

Features subscribe to the event types they care about; the engine knows nothing of
them. Handlers run synchronously and must not block: a publisher queues and returns.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gateway.points.codec import Value

log = logging.getLogger("cityedge.events")


@dataclass(slots=True)
class DeviceUpdate:
    """A device's values after a poll cycle: every point, good ones in values, failed ones in errors."""

    device: str
    ts: int  # epoch milliseconds
    values: Mapping[str, Value]
    errors: Mapping[str, str]
    received: float  # monotonic time the last answer arrived, for latency measurements


@dataclass(slots=True)
class HealthChanged:
    device: str
    state: str  # online | degraded | offline
    previous: str | None
    reason: str | None
    health: Mapping[str, Any]


@dataclass(slots=True)
class Notable:
    """Something an operator should hear about: an alarm, a command and its outcome, a reload."""

    kind: str
    data: Mapping[str, Any] = field(default_factory=dict)


E = TypeVar("E")


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[type, list[Callable[[Any], None]]] = defaultdict(list)

    def subscribe(self, kind: type[E], handler: Callable[[E], None]) -> Callable[[], None]:
        self._handlers[kind].append(handler)
        return lambda: self._handlers[kind].remove(handler)

    def publish(self, event: object) -> None:
        for handler in self._handlers.get(type(event), ()):
            try:
                handler(event)
            except Exception:  # one broken subscriber must not stop polling
                log.exception("handler for %s failed", type(event).__name__)
