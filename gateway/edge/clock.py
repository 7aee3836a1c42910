"""The one clock edge automation reads: the system's, or a simulated one a test moves (a night in seconds).

Everything in `gateway/edge/` asks `clock.now()` for the time (an aware UTC datetime) and
waits with `await clock.sleep_until(when)`; nothing there calls `time` or `datetime.now`.
`SimulatedClock.advance(seconds)` moves its time forward, waking every sleeper whose time
has come, in order, and letting each run before time moves on. `FastClock` runs on its own
from a chosen moment, `speed` times faster than real time: `cityedge hil run` plays a night
in minutes against emulated devices that keep real time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

MAX_NAP = 30.0  # the system clock is re-read at least this often while sleeping (NTP steps, suspend)


class Clock(Protocol):
    def now(self) -> datetime: ...

    async def sleep_until(self, when: datetime) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        while (left := (when - self.now()).total_seconds()) > 0:
            await asyncio.sleep(min(left, MAX_NAP))


class FastClock:
    """Time from `start`, `speed` times faster than the system's monotonic clock (from `t0`, default now)."""

    def __init__(self, start: datetime, speed: float, t0: float | None = None) -> None:
        if start.tzinfo is None:
            raise ValueError("a fast clock starts at an aware datetime")
        if not 0 < speed <= 100_000:
            raise ValueError("a fast clock's speed is above 0 and at most 100000")
        self.start, self.speed = start.astimezone(UTC), speed
        self.t0 = time.monotonic() if t0 is None else t0

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self.t0) * self.speed)

    async def sleep_until(self, when: datetime) -> None:
        while (left := (when - self.now()).total_seconds()) > 0:
            await asyncio.sleep(min(left / self.speed, MAX_NAP))


class SimulatedClock:
    """Time that moves only when a test says so."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("a simulated clock starts at an aware datetime")
        self._now = start.astimezone(UTC)
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._naps = 0  # sleeps begun, ever: a woken task that sleeps again has finished what it woke for

    def now(self) -> datetime:
        return self._now

    async def sleep_until(self, when: datetime) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._order), future))
        self._naps += 1
        await future

    async def advance(self, seconds: float, settle: float = 1.0) -> None:
        """Move time forward by `seconds`, stopping at each sleeper's time to wake it and let it run until it
        sleeps again (a command it sends to a device takes real time), or for `settle` real seconds at most."""
        end = self._now + timedelta(seconds=seconds)
        loop = asyncio.get_running_loop()
        while self._sleepers and self._sleepers[0][0] <= end:
            when, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, when)
            if future.done():  # its sleeper was cancelled (woken by something else)
                continue
            naps = self._naps
            future.set_result(None)
            give_up = loop.time() + settle
            while self._naps == naps and loop.time() < give_up:
                await asyncio.sleep(0.001)
        self._now = end
        await asyncio.sleep(0)

    async def run_until(self, when: datetime, step: float = 60.0, settle: float = 1.0) -> None:
        """Advance to `when` in steps of at most `step` seconds."""
        while self._now < when:
            await self.advance(min(step, (when - self._now).total_seconds()), settle)


async def sleep_or_wake(clock: Clock, when: datetime, wake: asyncio.Event) -> None:
    """Sleep until `when` on `clock`, or until `wake` is set, whichever comes first."""
    sleeper = asyncio.ensure_future(clock.sleep_until(when))
    waker = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, waker):
            task.cancel()
