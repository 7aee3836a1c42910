"""LinkScheduler: the one owner of a physical link. Strictly one request at a time, earliest due first.

Commands (writes, reads on request) wait in a priority lane and go out at the next
transaction boundary, ahead of polling. A device that times out loses the rest of
its cycle, so it costs the link at most its timeout; while offline it is only probed
with backoff. A link that cannot connect is retried with backoff too, without every
device paying the connect timeout in turn.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.core.device import Device, PollGroup
from gateway.core.events import DeviceUpdate, EventBus, HealthChanged, LinkDown, LinkUp
from gateway.core.health import Counters, State
from gateway.core.supervision import Supervisor, being_cancelled
from gateway.south.driver import (
    ConnectionFailed,
    LinkDriver,
    LinkTransport,
    LinkWaiting,
    Timeout,
    TransactionError,
)

log = logging.getLogger("cityedge.engine")

Job = Callable[[], Awaitable[Any]]


@dataclass
class LinkStats:
    counters: Counters = field(default_factory=Counters)
    busy: float = 0.0  # seconds spent in transactions
    state: str = "up"
    reason: str | None = None
    reconnect_backoff: float = 0.0

    def to_json(self, transport: LinkTransport, uptime: float) -> dict[str, Any]:
        return {
            "state": self.state,
            "reason": self.reason,
            "utilization": round(self.busy / uptime, 3) if uptime > 0 else 0.0,
            "reconnects": max(0, transport.reconnects - 1),
            "noise_bytes": transport.noise_bytes,
            **self.counters.to_json(),
        }


class LinkScheduler:
    def __init__(
        self,
        link_id: str,
        driver: LinkDriver,
        transport: LinkTransport,
        bus: EventBus,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.id = link_id
        self.driver = driver
        self.transport = transport
        self.bus = bus
        self.supervisor = supervisor or Supervisor()
        self.devices: dict[str, Device] = {}
        self.stats = LinkStats()
        self._priority: deque[tuple[Job, asyncio.Future[Any]]] = deque()
        self._wake = asyncio.Event()
        self._running = False
        self._retry_at = 0.0  # link down: no attempts before this (monotonic)
        self._started = 0.0
        self._rng = random.Random(link_id)

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._started = loop.time()
        for device in self.devices.values():
            device.schedule(self._started)
        self.supervisor.spawn(f"link {self.id}", self._run)
        self._running = True

    async def stop(self) -> None:
        if self._running:
            await self.supervisor.cancel(f"link {self.id}")
            self._running = False
        while self._priority:
            _, future = self._priority.popleft()
            if not future.done():
                future.set_exception(ConnectionFailed(f"{self.id}: stopping", "stopping"))
        await self.transport.close()

    def add(self, device: Device) -> None:
        self.devices[device.id] = device
        if self._running:
            device.schedule(asyncio.get_running_loop().time())
            self._wake.set()

    def remove(self, device_id: str) -> Device | None:
        return self.devices.pop(device_id, None)

    # -- the priority lane ----------------------------------------------------------------------

    async def submit(self, job: Job) -> Any:
        """Run `job` (which may call `transaction`) at the next transaction boundary, ahead of polling."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._priority.append((job, future))
        self._wake.set()
        return await future

    async def _drain_priority(self) -> None:
        while self._priority:
            job, future = self._priority.popleft()
            if future.done():  # the caller gave up (timeout)
                continue
            try:
                future.set_result(await job())
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)

    # -- transactions -------------------------------------------------------------------------

    async def transaction(self, device: Device, request: Any) -> Any:
        """One request/answer on this link, counted for the device and the link. Returns the driver's answer."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._retry_at:
            cause = self.stats.reason or "link_down"
            raise LinkWaiting(f"{self.id}: link down ({cause}), retrying later", cause)
        start = loop.time()
        device_counters, link_counters = device.health.counters, self.stats.counters
        device_counters.requests += 1
        link_counters.requests += 1
        try:
            answer = await self.driver.transact(self.transport, device, request)
        except TransactionError as exc:
            device_counters.errors[exc.kind] += 1
            link_counters.errors[exc.kind] += 1
            if isinstance(exc, ConnectionFailed) and not exc.dropped:
                self._link_down(exc)  # the next transaction reconnects at once after a drop; a refusal backs off
            elif exc.answered:
                self._link_up()
                self._answered(device, loop.time() - start)
            raise
        finally:
            self.stats.busy += loop.time() - start
            if device.pause:
                await asyncio.sleep(device.pause)
        self._link_up()
        self._answered(device, loop.time() - start)
        return answer

    def _answered(self, device: Device, seconds: float) -> None:
        device.health.counters.rtt.add(seconds)
        self.stats.counters.rtt.add(seconds)

    def _link_down(self, exc: ConnectionFailed) -> None:
        if isinstance(exc, LinkWaiting):
            return
        backoff = min(30.0, max(0.5, self.stats.reconnect_backoff * 2 or 0.5))
        self.stats.reconnect_backoff = backoff
        self._retry_at = asyncio.get_running_loop().time() + backoff * self._rng.uniform(0.8, 1.2)
        if self.stats.state != "down":
            log.warning("link %s down: %s", self.id, exc)
            self.bus.publish(LinkDown(self.id, exc.reason, str(exc)))
        self.stats.state, self.stats.reason = "down", exc.reason

    def _link_up(self) -> None:
        if self.stats.state != "up":
            log.info("link %s up", self.id)
            self.bus.publish(LinkUp(self.id))
        self.stats.state, self.stats.reason, self.stats.reconnect_backoff = "up", None, 0.0

    # -- polling ------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if being_cancelled():  # a cancellation a library swallowed (3.11's wait_for can) still stops us
                raise asyncio.CancelledError
            await self._drain_priority()
            due = self._next_group()
            now = loop.time()
            if due is None or due[1].next_due > now:
                await self._sleep_until(due[1].next_due if due else now + 3600)
                continue
            device, group = due
            try:
                await self._cycle(device, group, probe=device.health.state is State.OFFLINE)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not stop polling for good
                if being_cancelled():
                    raise asyncio.CancelledError from exc
                log.exception("cycle of %s failed", device.id)
            self._reschedule(device, group, loop.time())

    def _next_group(self) -> tuple[Device, PollGroup] | None:
        best: tuple[Device, PollGroup] | None = None
        for device in self.devices.values():
            for group in device.groups:
                if best is None or group.next_due < best[1].next_due:
                    best = (device, group)
        return best

    async def _sleep_until(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        if self._priority:
            return
        self._wake.clear()
        handle = loop.call_at(deadline, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            handle.cancel()

    def _reschedule(self, device: Device, group: PollGroup, now: float) -> None:
        if device.health.state is State.OFFLINE:
            group.next_due = now + device.health.next_probe_in()
        else:
            device.health.overruns += group.advance(now)

    async def _cycle(self, device: Device, group: PollGroup, *, probe: bool = False) -> None:
        """Poll one group of one device: every planned read, or one probe while the device is offline."""
        queue = deque(group.plan[:1] if probe else group.plan)
        answered = 0
        failure: TransactionError | None = None
        partial_reason = ""
        received = 0.0
        guessing = False  # the driver replanned after a timeout: does the first new request answer?
        # One guess, on the probes of a device that is offline, where it costs little: a device going away is
        # found as fast as ever, and a dead one costs its link one timeout per cycle as before.
        guessed = not probe
        while queue:
            await self._drain_priority()
            request = queue.popleft()
            try:
                answer = await self.transaction(device, request)
            except ConnectionFailed as exc:
                failure = exc
                break
            except TransactionError as exc:
                if guessing:
                    guessing = False
                    self.driver.settle(device, kept=False)
                if exc.answered:  # the device refused: maybe it wants the points asked for otherwise
                    answered += 1
                    instead = self.driver.replan(device, request, exc)
                    if instead is not None:
                        device.replan()
                        queue.extendleft(reversed(instead))
                        log.info("%s: %s on a merged request; asking for its points apart", device.id, exc.kind)
                        continue
                    device.fail(request.point_names, exc.kind)
                    partial_reason = exc.kind
                    continue
                if exc.corrupt and answered:
                    device.fail(request.point_names, exc.kind)  # a bad frame among good ones: keep going
                    partial_reason = exc.kind
                    continue
                if isinstance(exc, Timeout) and not guessed:
                    guessed = True
                    instead = self.driver.replan(device, request, exc)
                    if instead is not None:  # perhaps only too long for it: try shorter requests once
                        guessing = True
                        queue.extendleft(reversed(instead))
                        continue
                failure = exc  # a timeout (or garbage instead of an answer): skip the rest of the cycle
                break
            if guessing:
                guessing = False
                self.driver.settle(device, kept=True)
                device.replan()
            answered += 1
            received = asyncio.get_running_loop().time()
            self.driver.decode(device, request, answer)
        if failure is None and probe:
            # The probe answered: back to normal at once, with a full cycle right away,
            # and the schedule re-anchored on now.
            group.next_due = asyncio.get_running_loop().time()
            await self._cycle(device, group)
            return
        if device.screened and device.screen() and not partial_reason:
            partial_reason = "implausible"
        reason = partial_reason
        ts = device.timestamp()
        if failure is not None:
            reason = failure.reason if isinstance(failure, ConnectionFailed) else failure.kind
            device.clear_all(reason)
            device.group_ts.update(dict.fromkeys(device.group_ts, ts))
        device.group_ts[group.name] = ts
        self._finish(device, ts, ok=failure is None, partial=bool(partial_reason), reason=reason, received=received)

    def _finish(self, device: Device, ts: int, *, ok: bool, partial: bool, reason: str, received: float) -> None:
        health = device.health
        previous = health.state.value if health.known else None
        if health.cycle_done(ok=ok, partial=partial or (ok and bool(device.errors)), reason=reason):
            log.info("%s: %s%s", device.id, health.state.value, f" ({reason})" if reason else "")
            self.bus.publish(
                HealthChanged(device.id, health.state.value, previous, health.reason or None, health.to_json())
            )
        now = asyncio.get_running_loop().time()
        if device.reporter.due(device.values, device.errors, now):
            self.bus.publish(DeviceUpdate(device.id, ts, dict(device.values), dict(device.errors), received or now))

    def health(self) -> dict[str, Any]:
        uptime = asyncio.get_running_loop().time() - self._started if self._started else 0.0
        return self.stats.to_json(self.transport, uptime)
