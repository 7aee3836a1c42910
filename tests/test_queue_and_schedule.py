"""The bounded message queue in front of the broker, and poll schedules that never drift."""

from __future__ import annotations

import asyncio

from gateway.core.device import PollGroup, stable_fraction
from gateway.north.message import Kind, Outgoing
from gateway.north.queue import MessageQueue


def msg(topic: str, kind: Kind, size: int = 10) -> Outgoing:
    return Outgoing(topic, b"x" * size, kind)


async def test_send_order_coalescing_and_give_back() -> None:
    q = MessageQueue()
    q.put(msg("t/state", Kind.TELEMETRY))
    q.put(msg("t/event", Kind.EVENT))
    q.put(msg("t/a/availability", Kind.CONTROL))
    q.put(msg("t/set/result", Kind.REPLY))
    q.put(msg("t/a/availability", Kind.CONTROL, 20))  # replaces the older one
    assert len(q) == 4 and q.stats.coalesced == 1
    batch = await q.take(10)
    assert [m.topic for m in batch] == ["t/a/availability", "t/set/result", "t/event", "t/state"]
    assert batch[0].size == 20 + len("t/a/availability") + 32
    q.give_back(batch[2:])
    again = await q.take(10)
    assert [m.topic for m in again] == ["t/event", "t/state"]  # unacknowledged ones come back first, in order
    assert q.bytes == 0


async def test_bounds_drop_oldest_telemetry_first() -> None:
    q = MessageQueue(max_messages=5)
    for i in range(3):
        q.put(msg(f"event/{i}", Kind.EVENT))
    for i in range(5):
        q.put(msg(f"state/{i}", Kind.TELEMETRY))
    assert len(q) == 5 and q.stats.dropped == 3
    topics = [m.topic for m in await q.take(10)]
    assert topics == ["event/0", "event/1", "event/2", "state/3", "state/4"]
    small = MessageQueue(max_bytes=200)
    for i in range(10):
        small.put(msg(f"s/{i}", Kind.TELEMETRY, 20))
    assert small.bytes <= 200 and small.stats.dropped > 0


async def test_take_waits_for_work() -> None:
    q = MessageQueue()
    waiter = asyncio.create_task(q.take(5))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    q.put(msg("x", Kind.EVENT))
    assert [m.topic for m in await asyncio.wait_for(waiter, 1)] == ["x"]


def test_anchored_schedule_does_not_drift() -> None:
    group = PollGroup("default", 0.5, [])
    group.next_due = 1000.0
    for _ in range(100_000):  # 14 hours of 500 ms polls, each finishing a little late
        group.advance(group.next_due + 0.003)
    assert abs(group.next_due - (1000.0 + 100_000 * 0.5)) < 1e-6
    assert group.overruns == 0
    group.advance(group.next_due + 1.7)  # a stall of three intervals: skip the missed slots, do not burst
    assert group.overruns == 3 and group.next_due > 1000.0 + 100_000 * 0.5 + 1.7  # slots at +0.5, +1.0, +1.5


def test_start_offsets_spread_devices() -> None:
    offsets = sorted(stable_fraction(f"meter-{i}/default") for i in range(100))
    assert offsets == sorted(set(offsets))  # all different
    assert offsets[0] < 0.05 and offsets[-1] > 0.95  # spread over the whole interval
    assert stable_fraction("meter-1/default") == stable_fraction("meter-1/default")  # stable across restarts
