"""The durable outbox: every event and every state message waits in SQLite until the broker acknowledges it.

While the broker is reachable, messages go out at once from memory and are written
to disk in batches (every 100 ms); a message acknowledged before its batch is written
never costs a disk write. While the broker is away, messages only go to disk. After
a reconnection, what is on disk is replayed oldest first, at `store.replay_rate`
messages per second, while live messages go first, so nothing new waits behind a
day of backlog. Replayed messages keep their original `ts` (and carry the MQTT 5
user property `replay=true`).

The outbox never grows past `store.max_mb`: the oldest telemetry goes first, events
and alarms last, and every drop is counted. A corrupt file is moved aside and a fresh
one started; a store that cannot be written (read-only directory, full disk) is
reported and the gateway keeps running on the bounded in-memory queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections import deque
from pathlib import Path
from typing import Any

from gateway.config.model import StoreSettings
from gateway.core.supervision import InputFaults, Supervisor
from gateway.north.message import Kind, Outgoing
from gateway.north.queue import MessageQueue, QueueStats

log = logging.getLogger("cityedge.outbox")

DURABLE = (Kind.EVENT, Kind.TELEMETRY)
FLUSH_INTERVAL = 0.1
MAX_TS = 2**62  # epoch ms; anything beyond is no time and no SQLite INTEGER
HOT_LIMIT = 20_000  # live messages held in memory; beyond that the broker is too slow: replay from disk
ROW_OVERHEAD = 64  # bytes a row costs beyond topic and payload (ids, header, index)
PAGE = 4096  # SQLite's page size
WAL_SHARE = 16  # the write-ahead log may take 1/16 of store.max_mb ...
MIN_WAL = 32 * 1024  # ... and at least this
SHM_RESERVE = 64 * 1024  # the -shm index of the log: 32 KB per 4096 pages of log

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Outbox:
    """Durable events and telemetry in SQLite; control messages and replies (and everything, without a disk)
    in a bounded in-memory queue it keeps."""

    def __init__(
        self,
        settings: StoreSettings,
        on_drop: Any = None,
        *,
        faults: InputFaults | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.memory = MessageQueue()  # control messages and replies; everything when there is no disk
        self.stats = QueueStats()  # of the durable messages
        self._ready = self.memory.ready  # one wake-up for both: a message in either is something to send
        self.settings = settings
        self.faults = faults or InputFaults()
        self.supervisor = supervisor or Supervisor()
        self.path = settings.path
        self.max_bytes_disk = int(settings.max_mb * 1024 * 1024)
        # What is on disk stays within the budget: the write-ahead log gets its share, the -shm index a
        # fixed reserve, and the database the rest, counted in the pages it really uses.
        self.wal_limit = max(MIN_WAL, self.max_bytes_disk // WAL_SHARE)
        self.db_budget = self.max_bytes_disk - 2 * self.wal_limit - SHM_RESERVE
        self.on_drop = on_drop  # called with a summary when messages are dropped (rate-limited)
        self.db: sqlite3.Connection | None = None
        self.mode = "disk"
        self.problem: str | None = None
        self._pending: dict[int, Outgoing] = {}  # produced, not yet written
        self._acked: list[int] = []  # acknowledged, still on disk
        self._inflight: set[int] = set()
        self._hot: deque[Outgoing] = deque()  # live durable messages, in id order
        self._next_id = 1
        self._rows = 0
        self._row_bytes = 0
        self._boundary = 0  # rows up to here are backlog to replay
        self._cursor = 0  # backlog read position
        self._connected = False
        self._tokens = 0.0
        self._refilled = time.monotonic()
        self._replayed = 0
        self._replay_started = 0.0
        self.dropped_by_kind = {k.name.lower(): 0 for k in DURABLE}
        self._last_drop_note = float("-inf")
        self._open()

    # -- opening ----------------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            _private_directory(self.path.parent)
            self.db = self._connect()
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc) or "malformed" in str(exc) or "corrupt" in str(exc):
                self._move_aside(exc)
                try:
                    self.db = self._connect()
                except (sqlite3.Error, OSError) as again:
                    self._to_memory(f"cannot create {self.path}: {again}")
            else:
                self._to_memory(f"cannot open {self.path}: {exc}")
        except OSError as exc:
            self._to_memory(f"cannot open {self.path}: {exc.strerror or exc}")
        if self.db is not None:
            rows, size, top = self.db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(id), 0) FROM messages"
            ).fetchone()
            self._rows, self._row_bytes, self._next_id = rows, size, top + 1
            for name, value in self.db.execute("SELECT name, value FROM counters"):
                if name.startswith("dropped_"):
                    self.dropped_by_kind[name[8:]] = value
            self.stats.dropped = sum(self.dropped_by_kind.values())
            if rows:
                log.info("outbox %s: %d messages from before the restart will be delivered", self.path, rows)

    def _connect(self) -> sqlite3.Connection:
        _private_files(self.path)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # a new file can give pages back; an old one keeps its mode
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self.settings.sync == 'full' else 'NORMAL'}")
            # Keep the write-ahead log within its share: checkpoint at half of it, truncate to it after.
            db.execute(f"PRAGMA wal_autocheckpoint={max(2, self.wal_limit // PAGE // 2)}")
            db.execute(f"PRAGMA journal_size_limit={self.wal_limit}")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed ({check})")
            db.executescript(SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _move_aside(self, exc: Exception) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        log.error("outbox %s is corrupt (%s): moved to %s, starting a fresh outbox", self.path, exc, target)
        with contextlib.suppress(OSError):
            self.path.rename(target)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(OSError):
                Path(f"{self.path}{suffix}").rename(f"{target}{suffix}")
        self.problem = f"corrupt outbox moved to {target.name}"

    def _to_memory(self, reason: str) -> None:
        """Keep running without disk: the bounded in-memory queue, and say so."""
        if self.mode == "memory":
            return
        log.error("outbox: %s; keeping messages in memory only (bounded, lost on restart)", reason)
        self.mode, self.problem = "memory", reason
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
            self.db = None
        for message in sorted(self._pending.values(), key=lambda m: m.id):
            self.memory.put(message)
        self._pending.clear()

    # -- the queue interface --------------------------------------------------------------------

    def _durable(self, message: Outgoing) -> bool:
        """Stored on disk (rather than kept in the memory queue)."""
        return self.mode == "disk" and message.kind in DURABLE

    def put(self, message: Outgoing) -> None:
        if not self._durable(message):
            self.memory.put(message)
            return
        message.id = self._next_id
        self._next_id += 1
        if not isinstance(message.ts, int) or not 0 <= message.ts < MAX_TS:
            self.faults.reject("outbox_bad_timestamp", message.topic, f"ts {str(message.ts)[:30]} replaced by now")
            message.ts = 0
        if not message.ts:
            message.ts = int(time.time() * 1000)
        self.stats.enqueued += 1
        self._pending[message.id] = message
        if self._connected:
            if len(self._hot) >= HOT_LIMIT:  # the broker cannot keep up: let the disk carry it
                self._demote_hot()
            else:
                self._hot.append(message)
                self._ready.set()
        if len(self._pending) >= 5000:
            self.flush()

    def on_connect(self) -> None:
        """A new connection: everything stored so far is backlog, replayed oldest first."""
        self.flush()
        self._connected = True
        self._hot.clear()
        self._inflight.clear()
        self._boundary = self._next_id - 1
        self._cursor = 0
        self._replay_started = time.monotonic()
        self._replayed = 0
        if self._rows:
            self._ready.set()

    def on_disconnect(self) -> None:
        self._connected = False

    def _demote_hot(self) -> None:
        self._hot.clear()
        self._inflight.clear()
        self.flush()
        self._boundary = self._next_id - 1
        self._cursor = 0

    def __len__(self) -> int:
        return len(self.memory) + self._rows + len(self._pending) - len(self._acked)

    async def take(self, limit: int) -> list[Outgoing]:
        while True:
            batch = self._take_now(limit)
            if batch:
                return batch
            self._ready.clear()
            wait = self._backlog_wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), wait)

    def _take_now(self, limit: int) -> list[Outgoing]:
        batch: list[Outgoing] = []
        if len(self.memory):
            batch = self.memory.pop(limit)
        while self._hot and len(batch) < limit:
            message = self._hot.popleft()
            self._inflight.add(message.id)
            batch.append(message)
        if len(batch) < limit and self.db is not None and self._cursor < self._boundary:
            batch.extend(self._take_backlog(limit - len(batch)))
        return batch

    def _backlog_wait(self) -> float | None:
        if self.db is None or self._cursor >= self._boundary or not self._connected:
            return None
        return max(0.005, (1 - self._tokens) / self.settings.replay_rate)

    def _take_backlog(self, limit: int) -> list[Outgoing]:
        now = time.monotonic()
        rate = self.settings.replay_rate
        self._tokens = min(rate, self._tokens + (now - self._refilled) * rate)  # at most one second of burst
        self._refilled = now
        allowed = min(limit, int(self._tokens))
        if allowed <= 0:
            return []
        self.flush()
        assert self.db is not None
        rows = self.db.execute(
            "SELECT id, kind, topic, payload, qos, retain, ts FROM messages WHERE id > ? AND id <= ? "
            "ORDER BY id LIMIT ?",
            (self._cursor, self._boundary, allowed),
        ).fetchall()
        out = []
        for row_id, kind, topic, payload, qos, retain, ts in rows:
            self._cursor = row_id
            if row_id in self._inflight:
                continue
            self._inflight.add(row_id)
            out.append(Outgoing(topic, payload, Kind(kind), qos, bool(retain), {"replay": True}, ts, row_id))
        if not rows:
            self._cursor = self._boundary
        self._tokens -= len(out)
        self._replayed += len(out)
        return out

    def done(self, sent: list[Outgoing]) -> None:
        self.memory.done([m for m in sent if not self._durable(m)])
        for message in sent:
            if not self._durable(message):
                continue
            self.stats.sent += 1
            self._inflight.discard(message.id)
            if self._pending.pop(message.id, None) is None:
                self._acked.append(message.id)

    def give_back(self, unsent: list[Outgoing]) -> None:
        self.memory.give_back([m for m in unsent if not self._durable(m)])
        durable = [m for m in unsent if self._durable(m)]
        for message in durable:
            self._inflight.discard(message.id)
        replayed = [m.id for m in durable if m.id <= self._boundary]
        if replayed:
            self._cursor = min(self._cursor, min(replayed) - 1)
        live = [m for m in durable if m.id > self._boundary]
        for message in sorted(live, key=lambda m: m.id, reverse=True):
            self._hot.appendleft(message)
        if durable:
            self._ready.set()

    # -- writing ------------------------------------------------------------------------------

    def start(self) -> None:
        self.supervisor.spawn("outbox-writer", self._flush_loop)

    async def stop(self) -> None:
        await self.supervisor.cancel("outbox-writer")
        self.flush()
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self.db.close()
            self.db = None

    async def _flush_loop(self) -> None:
        last_age_check = 0.0
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            self.flush()
            now = time.monotonic()
            if self.settings.max_age and now - last_age_check > 10:
                last_age_check = now
                self._expire()

    def flush(self) -> None:
        """Write new messages and forget acknowledged ones, in transactions no larger than half the log's share."""
        if self.db is None or (not self._pending and not self._acked):
            return
        rows = [
            (m.id, int(m.kind), m.topic, m.payload, m.qos, int(m.retain), m.ts, m.size + ROW_OVERHEAD)
            for m in self._pending.values()
        ]
        acked = self._acked
        try:
            removed = (0, 0)
            for index, chunk in enumerate(_chunks(rows, self.wal_limit // 2)):
                self._make_room(sum(r[7] for r in chunk))
                with self.db:
                    self.db.execute("BEGIN")
                    self.db.executemany("INSERT OR REPLACE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)", chunk)
                    if index == 0:
                        removed = self._delete(acked)
            if not rows:
                with self.db:
                    self.db.execute("BEGIN")
                    removed = self._delete(acked)
        except sqlite3.Error as exc:
            self._to_memory(f"cannot write {self.path}: {exc}")
            return
        except (OverflowError, ValueError, TypeError):  # a row SQLite cannot take: set it aside, write the rest
            self._quarantine(rows)
            return
        self._pending.clear()
        self._acked = []
        self._rows += len(rows) - removed[0]
        self._row_bytes += sum(r[7] for r in rows) - removed[1]

    def _quarantine(self, rows: list[tuple[Any, ...]]) -> None:
        """Drop the messages whose rows cannot be stored (counted, logged); the others go in the next flush."""
        assert self.db is not None
        for row in rows:
            try:
                self.db.execute("BEGIN")
                try:  # a trial insert, rolled back: only tells whether this row can be stored
                    self.db.execute("INSERT OR REPLACE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
                finally:
                    self.db.execute("ROLLBACK")
            except sqlite3.Error:
                return  # the store itself fails: the next flush finds out and says so
            except (OverflowError, ValueError, TypeError) as exc:
                message = self._pending.pop(row[0])
                self._hot = deque(m for m in self._hot if m.id != message.id)
                self.faults.reject("outbox_unstorable", message.topic, exc)

    def _delete(self, ids: list[int]) -> tuple[int, int]:
        assert self.db is not None
        count = size = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for (row_size,) in self.db.execute(f"DELETE FROM messages WHERE id IN ({marks}) RETURNING size", chunk):
                count += 1
                size += row_size
        return count, size

    def _used_bytes(self) -> int:
        """Bytes of the database file in use (pages with data), whatever the rows' own sizes add up to."""
        assert self.db is not None
        pages = (
            self.db.execute("PRAGMA page_count").fetchone()[0] - self.db.execute("PRAGMA freelist_count").fetchone()[0]
        )
        return int(pages) * PAGE

    def _make_room(self, incoming: int) -> None:
        """Before rows of `incoming` bytes go in: drop old messages if they would not fit the database's share."""
        used = self._used_bytes()
        expected = int(incoming * (used / self._row_bytes if self._row_bytes > 4 * PAGE else 1.5))  # page overhead
        if used + expected > self.db_budget:
            self._enforce_disk_bound(int(self.db_budget * 0.9) - expected)

    def _enforce_disk_bound(self, target: int) -> None:
        """Oldest telemetry first, then oldest events, until the database uses `target` bytes; give pages back."""
        assert self.db is not None
        dropped = dict.fromkeys(self.dropped_by_kind, 0)
        for kind in (Kind.TELEMETRY, Kind.EVENT):
            while (used := self._used_bytes()) > target:
                average = used / max(1, self._rows)
                needed = min(1000, int((used - target) / average) + 1)  # just the excess
                rows = self.db.execute(
                    "SELECT id FROM messages WHERE kind = ? ORDER BY id LIMIT ?", (int(kind), needed)
                ).fetchall()
                ids = [r[0] for r in rows if r[0] not in self._inflight]
                if not ids:
                    break
                with self.db:
                    self.db.execute("BEGIN")
                    count, size = self._delete(ids)
                self._rows -= count
                self._row_bytes -= size
                dropped[kind.name.lower()] += count
        self._count_drops(dropped, "disk budget store.max_mb reached")
        if self.db.execute("PRAGMA page_count").fetchone()[0] * PAGE > self.db_budget:
            with contextlib.suppress(sqlite3.Error):  # the file itself is too large: give free pages back
                self.db.execute("PRAGMA incremental_vacuum").fetchall()  # it frees one page per row it returns
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def _expire(self) -> None:
        assert self.settings.max_age is not None
        if self.db is None:
            return
        cutoff = int((time.time() - self.settings.max_age) * 1000)
        ids = [
            r[0]
            for r in self.db.execute("SELECT id FROM messages WHERE kind = ? AND ts < ?", (int(Kind.TELEMETRY), cutoff))
            if r[0] not in self._inflight
        ]
        if ids:
            with self.db:
                self.db.execute("BEGIN")
                count, size = self._delete(ids)
            self._rows -= count
            self._row_bytes -= size
            self._count_drops({"telemetry": count}, "older than store.max_age")

    def _count_drops(self, dropped: dict[str, int], why: str) -> None:
        total = sum(dropped.values())
        if not total or self.db is None:
            return
        for name, count in dropped.items():
            self.dropped_by_kind[name] = self.dropped_by_kind.get(name, 0) + count
        self.stats.dropped = sum(self.dropped_by_kind.values())
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                [(f"dropped_{k}", v) for k, v in self.dropped_by_kind.items()],
            )
        now = time.monotonic()
        if now - self._last_drop_note > 10:  # during a long outage this happens at every flush: say it now and then
            self._last_drop_note = now
            log.warning("outbox: dropping old messages (%s); dropped so far: %s", why, self.dropped_by_kind)
            if self.on_drop is not None:
                self.on_drop({"dropped": dropped, "reason": why, "total_dropped": self.dropped_by_kind})

    # -- visibility ------------------------------------------------------------------------------

    def disk_bytes(self) -> int:
        """What the outbox takes on disk: the database, its write-ahead log and the log's index."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                total += Path(f"{self.path}{suffix}").stat().st_size
        return total

    def oldest_ts(self) -> int | None:
        stamps = [t for t in (self.memory.oldest_ts(),) if t]
        if self.db is not None and self._rows:
            row = self.db.execute("SELECT MIN(ts) FROM messages").fetchone()
            if row and row[0]:
                stamps.append(row[0])
        stamps += [m.ts for m in list(self._pending.values())[:1]]
        return min(stamps) if stamps else None

    def status(self) -> dict[str, Any]:
        oldest = self.oldest_ts()
        elapsed = time.monotonic() - self._replay_started if self._replay_started else 0
        return {
            "mode": self.mode,
            "problem": self.problem,
            "depth": len(self),
            "backlog": max(0, self._boundary - self._cursor) if self._connected else self._rows + len(self._pending),
            "bytes_on_disk": self.disk_bytes(),
            "oldest_age_s": round(time.time() - oldest / 1000, 1) if oldest else 0,
            "replay_rate": round(self._replayed / elapsed, 1) if elapsed > 1 and self._replayed else 0.0,
            "sent": self.stats.sent + self.memory.stats.sent,
            "dropped": dict(self.dropped_by_kind),
        }


def _chunks(rows: list[tuple[Any, ...]], limit: int) -> list[list[tuple[Any, ...]]]:
    """Rows in consecutive groups of at most `limit` bytes (at least one row each)."""
    out: list[list[tuple[Any, ...]]] = []
    size = limit
    for row in rows:
        if size + row[7] > limit:
            out.append([])
            size = 0
        out[-1].append(row)
        size += row[7]
    return out


def _private_directory(directory: Path) -> None:
    """Create the outbox's directory (and any parent it needs) for us alone; ones that exist are left as they are."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    for created in reversed(missing):
        created.mkdir(mode=0o700, exist_ok=True)
        created.chmod(0o700)  # mkdir's mode passes through the umask


def _private_files(path: Path) -> None:
    """The outbox holds telemetry, events and command audits: 0600, whatever the umask."""
    if not path.exists():
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").chmod(0o600)
