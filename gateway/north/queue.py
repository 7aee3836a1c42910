"""A bounded in-memory queue in front of the broker connection.

Control messages (retained status, availability, health) keep only the latest per
topic. When the queue is full the oldest telemetry goes first, then the oldest
events; replies and control messages are never dropped for telemetry. Messages
leave only when acknowledged; unacknowledged ones go back to the front, in order.
The durable outbox keeps one of these for what it does not store, and offers the
same interface (`OutgoingQueue`), which is all the MQTT link sees.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.north.message import Kind, Outgoing


class OutgoingQueue(Protocol):
    """What a broker session sends from: messages leave when acknowledged, or come back in order."""

    def __len__(self) -> int: ...
    def put(self, message: Outgoing) -> None: ...
    async def take(self, limit: int) -> list[Outgoing]: ...
    def done(self, sent: list[Outgoing]) -> None: ...
    def give_back(self, unsent: list[Outgoing]) -> None: ...
    def on_connect(self) -> None: ...
    def on_disconnect(self) -> None: ...
    def start(self) -> None: ...
    async def stop(self) -> None: ...
    def status(self) -> dict[str, Any]: ...


@dataclass
class QueueStats:
    enqueued: int = 0
    sent: int = 0
    dropped: int = 0
    coalesced: int = 0


class MessageQueue:
    def __init__(self, max_messages: int = 100_000, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._control: OrderedDict[str, Outgoing] = OrderedDict()
        self._lanes: dict[Kind, deque[Outgoing]] = {k: deque() for k in (Kind.REPLY, Kind.EVENT, Kind.TELEMETRY)}
        self._bytes = 0
        self._seq = 0
        self.ready = asyncio.Event()  # set whenever a message arrives (an owner may share it)
        self.stats = QueueStats()

    def __len__(self) -> int:
        return len(self._control) + sum(len(lane) for lane in self._lanes.values())

    @property
    def bytes(self) -> int:
        return self._bytes

    def put(self, message: Outgoing) -> None:
        self._seq += 1
        message.id = self._seq
        self.stats.enqueued += 1
        if message.kind is Kind.CONTROL:
            old = self._control.pop(message.topic, None)
            if old is not None:
                self._bytes -= old.size
                self.stats.coalesced += 1
            self._control[message.topic] = message
        else:
            self._lanes[message.kind].append(message)
        self._bytes += message.size
        self._enforce_bounds()
        self.ready.set()

    def _enforce_bounds(self) -> None:
        while len(self) > self.max_messages or self._bytes > self.max_bytes:
            lane = next((self._lanes[k] for k in (Kind.TELEMETRY, Kind.EVENT, Kind.REPLY) if self._lanes[k]), None)
            if lane is None:
                return  # only control messages: at most one per topic, bounded by the configuration
            dropped = lane.popleft()
            self._bytes -= dropped.size
            self.stats.dropped += 1

    async def take(self, limit: int) -> list[Outgoing]:
        """Up to `limit` messages in send order; waits until there is at least one."""
        while not len(self):
            self.ready.clear()
            await self.ready.wait()
        return self.pop(limit)

    def pop(self, limit: int) -> list[Outgoing]:
        """Up to `limit` messages in send order, at once."""
        batch: list[Outgoing] = []
        while self._control and len(batch) < limit:
            _, message = self._control.popitem(last=False)
            batch.append(message)
        for kind in (Kind.REPLY, Kind.EVENT, Kind.TELEMETRY):
            lane = self._lanes[kind]
            while lane and len(batch) < limit:
                batch.append(lane.popleft())
        for message in batch:
            self._bytes -= message.size
        return batch

    def done(self, sent: list[Outgoing]) -> None:
        self.stats.sent += len(sent)

    def give_back(self, unsent: list[Outgoing]) -> None:
        """Messages the broker did not acknowledge: first in line again, in their order."""
        for message in reversed(unsent):
            if message.kind is Kind.CONTROL:
                if message.topic in self._control:
                    continue  # a newer one is already waiting
                self._control[message.topic] = message
                self._control.move_to_end(message.topic, last=False)
            else:
                self._lanes[message.kind].appendleft(message)
            self._bytes += message.size
        self._enforce_bounds()
        if unsent:
            self.ready.set()

    def on_connect(self) -> None:
        """The broker connection is (re)established."""

    def on_disconnect(self) -> None:
        """The broker connection is gone."""

    def start(self) -> None:
        """Background work, if any (the durable outbox flushes to disk)."""

    async def stop(self) -> None:
        """Finish background work."""

    def status(self) -> dict[str, Any]:
        oldest = self.oldest_ts()
        return {
            "mode": "memory",
            "depth": len(self),
            "bytes": self._bytes,
            "oldest_age_s": round(time.time() - oldest / 1000, 1) if oldest else 0,
            "sent": self.stats.sent,
            "dropped": self.stats.dropped,
        }

    def oldest_ts(self) -> int | None:
        stamps = [m.ts for lane in self._lanes.values() for m in list(lane)[:1]] + [
            m.ts for m in self._control.values()
        ]
        return min(stamps) if stamps else None
