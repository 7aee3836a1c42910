"""An outgoing MQTT message and the classes that decide its priority and its fate when space runs out."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from gateway.core.inputs import BadNumber


class Kind(IntEnum):
    """Sent in this order; dropped in the reverse order when the queue is full."""

    CONTROL = 0  # status, availability, device health, devices: retained, only the latest per topic matters
    REPLY = 1  # set/result and response/<action>: someone is waiting for it
    EVENT = 2  # alarms, audit records, notable events
    TELEMETRY = 3  # device state


@dataclass(slots=True)
class Outgoing:
    topic: str
    payload: bytes
    kind: Kind
    qos: int = 1
    retain: bool = False
    properties: dict[str, Any] = field(default_factory=dict)  # MQTT 5: response topic, correlation data
    ts: int = 0  # epoch ms when produced (replayed messages keep it)
    id: int = 0  # queue sequence number

    @property
    def size(self) -> int:
        return len(self.payload) + len(self.topic) + 32


def dumps(data: object) -> bytes:
    """Compact JSON, as every CityEdge payload is. Never NaN: ValueError rather than invalid JSON."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_shown).encode()


def _shown(value: object) -> str:
    if isinstance(value, BadNumber):  # a refused number, quoted as its sender wrote it (audit records)
        return value.text
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_safe(data: object) -> object:
    """The last line of defence: non-finite numbers become null and unknown objects text."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {str(k): json_safe(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [json_safe(v) for v in data]
    if data is None or isinstance(data, bool | int | str):
        return data
    return str(data)
