"""What keeps a gateway running for years: counted input faults, and long-lived tasks that are restarted.

`InputFaults` counts every input that was dropped or quarantined, by kind (a node's
malformed telemetry, a command that arrived while all workers were busy, a message
the outbox could not store, ...), logs each with its context, at most a few times
per kind, and shows the counts in `<base>/health`. `Supervisor` runs the tasks that
must live as long as the gateway (MQTT connection, outbox writer, link schedulers,
periodic publishers); one that ends by an exception is logged, counted and started
again after a short pause, and the gateway health says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("cityedge.supervision")

LOUD_FIRST = 3  # log the first few faults of each kind in full, then one line per LOG_EVERY
LOG_EVERY = 1000
RESTART_PAUSES = (0.1, 0.5, 1.0, 2.0, 5.0)  # seconds before restarting a task that failed 1, 2, ... times in a row
STABLE_AFTER = 30.0  # a task that ran this long before failing starts again from the shortest pause
STOP_WAIT = 5.0  # seconds a cancelled task may take to end


class InputFaults:
    """Inputs dropped or quarantined, by kind, with rate-limited logging."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def reject(self, kind: str, context: str, reason: object) -> None:
        """Count one refused input; `context` says where it came from (a topic, a device, a row)."""
        self.counts[kind] += 1
        count = self.counts[kind]
        if count <= LOUD_FIRST or count % LOG_EVERY == 0:
            shown = printable(context), printable(reason)
            log.warning("dropped input (%s) from %s: %s [%d of this kind so far]", kind, *shown, count)

    def to_json(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


@dataclass
class TaskRecord:
    name: str
    restarts: int = 0
    last_error: str | None = None
    running: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"running": self.running, "restarts": self.restarts, "last_error": self.last_error}


class Supervisor:
    """Runs named long-lived coroutines; restarts any that ends with an exception."""

    def __init__(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._sleep = sleep
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.records: dict[str, TaskRecord] = {}

    def spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Start `factory()` as task `name` (replacing a stopped one of that name), supervised."""
        record = self.records.setdefault(name, TaskRecord(name))
        task = asyncio.get_running_loop().create_task(self._keep(record, factory), name=name)
        self._tasks[name] = task
        return task

    async def _keep(self, record: TaskRecord, factory: Callable[[], Awaitable[None]]) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            record.running = True
            try:
                await factory()
            except asyncio.CancelledError:
                record.running = False
                raise
            except Exception as exc:
                record.running = False
                if being_cancelled():  # a library turned our cancellation into an error: stop, do not restart
                    raise asyncio.CancelledError from exc
                record.restarts += 1
                record.last_error = f"{type(exc).__name__}: {exc}"[:200]
                log.error("task %s failed (%s); restarting it", record.name, record.last_error, exc_info=True)
            else:
                record.running = False
                return  # a task that finishes of its own accord is done
            failures = 1 if loop.time() - started > STABLE_AFTER else failures + 1
            await self._sleep(RESTART_PAUSES[min(failures, len(RESTART_PAUSES)) - 1])

    async def cancel(self, name: str) -> None:
        """Cancel task `name` and wait for it to end, for STOP_WAIT seconds at most."""
        task = self._tasks.pop(name, None)
        if task is None:
            return
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=STOP_WAIT)
        if not done:
            log.error("task %s did not stop within %gs of being cancelled; leaving it", name, STOP_WAIT)
            return
        with contextlib.suppress(asyncio.CancelledError, Exception):
            task.result()

    async def stop(self) -> None:
        for name in list(self._tasks):
            await self.cancel(name)

    def to_json(self) -> dict[str, Any]:
        """Counts, and every task that ever failed or is not running, by name."""
        return {
            "running": sum(1 for r in self.records.values() if r.running),
            "restarts": sum(r.restarts for r in self.records.values()),
            "troubled": {name: r.to_json() for name, r in sorted(self.records.items()) if r.restarts or not r.running},
        }


def printable(text: object, limit: int = 200) -> str:
    """Text from outside, safe for one log line: no line breaks, control characters or lone surrogates."""
    shown = str(text)
    if not shown.isprintable() or len(shown) > limit:
        shown = shown.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
        shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in shown)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def guarded(faults: InputFaults, kind: str, context: str, action: Callable[[], object]) -> bool:
    """Run one item's work; an exception is counted as a fault of `kind`, logged once, and swallowed."""
    try:
        action()
    except Exception as exc:
        faults.reject(kind, context, f"{type(exc).__name__}: {exc}")
        log.debug("traceback of the %s fault", kind, exc_info=True)
        return False
    return True
