"""DeviceHealth: online, degraded or offline, why, and since when; with the counters operators need.

A device is online while its cycles succeed, degraded when some requests or points
fail, and offline after `offline_after` consecutive failed cycles. While offline it is
probed with exponential backoff and jitter; the first success brings it back to
online at once, with its normal poll interval.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class State(StrEnum):
    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


@dataclass
class RoundTrip:
    """Round-trip times of answered requests, in seconds."""

    last: float = 0.0
    average: float = 0.0  # exponentially weighted, so it follows the present
    maximum: float = 0.0
    count: int = 0

    def add(self, seconds: float) -> None:
        self.last = seconds
        self.average = seconds if self.count == 0 else 0.9 * self.average + 0.1 * seconds
        self.maximum = max(self.maximum, seconds)
        self.count += 1

    def to_json(self) -> dict[str, float]:
        return {
            "last_ms": round(self.last * 1000, 2),
            "avg_ms": round(self.average * 1000, 2),
            "max_ms": round(self.maximum * 1000, 2),
        }


@dataclass
class Counters:
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # by kind: timeout, crc, framing, connection, exceptions
    rtt: RoundTrip = field(default_factory=RoundTrip)

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": dict(self.errors), "rtt": self.rtt.to_json()}


class DeviceHealth:
    def __init__(
        self, poll: float, *, offline_after: int = 3, max_backoff: float = 60.0, rng: random.Random | None = None
    ):
        self.poll = poll
        self.offline_after = offline_after
        self.max_backoff = max(max_backoff, poll)
        self.rng = rng or random.Random()
        self.state = State.ONLINE
        self.reason = ""
        self.since = time.time()
        self.last_ok: float | None = None
        self.consecutive_failures = 0
        self.backoff = 0.0  # current offline probe interval (0 while online)
        self.counters = Counters()
        self.cycles = 0
        self.failed_cycles = 0
        self.overruns = 0  # poll slots skipped because the link was too busy (the link counts reconnects)
        self.known = False  # no cycle has finished yet
        self.implausible = 0  # readings outside their point's plausible range, published as errors instead
        self.learned: dict[str, Any] = {}  # what its protocol's driver learned about it (e.g. read limits)

    def cycle_done(self, *, ok: bool, partial: bool, reason: str = "") -> bool:
        """Record a finished cycle; True when the state changed."""
        self.cycles += 1
        before = (self.state, self.known)
        self.known = True
        if ok:
            self.consecutive_failures = 0
            self.backoff = 0.0
            self.last_ok = time.time()
            self._become(State.DEGRADED if partial else State.ONLINE, reason if partial else "")
        else:
            self.failed_cycles += 1
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.offline_after:
                self._become(State.OFFLINE, reason)
                self.backoff = min(self.max_backoff, max(self.poll, self.backoff * 2 or self.poll))
            else:
                self._become(State.DEGRADED, reason)
        return (self.state, self.known) != before

    @property
    def state_name(self) -> str:
        return self.state.value

    def _become(self, state: State, reason: str) -> None:
        if state is not self.state:
            self.since = time.time()
        self.state = state
        self.reason = reason

    def next_probe_in(self) -> float:
        """Seconds until the next attempt while offline: the backoff with +-20 % jitter."""
        return self.backoff * self.rng.uniform(0.8, 1.2)

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "reason": self.reason or None,
            "since": int(self.since * 1000),
            "last_ok": int(self.last_ok * 1000) if self.last_ok else None,
            "consecutive_failures": self.consecutive_failures,
            "backoff_s": round(self.backoff, 2),
            "cycles": self.cycles,
            "failed_cycles": self.failed_cycles,
            "overruns": self.overruns,
            "implausible": self.implausible,
            **self.counters.to_json(),
            **({"learned": self.learned} if self.learned else {}),
        }
