"""A polled Modbus device: its points, poll groups, read plan, latest values, health and reporting."""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.config.model import DeviceConfig
from gateway.core.health import DeviceHealth
from gateway.core.planner import ReadPlanner, ReadRequest
from gateway.core.reporting import Reporter
from gateway.points.codec import CodecError, Value
from gateway.profiles.expand import PointSpec, ResolvedProfile


@dataclass
class PollGroup:
    """Points polled together at one interval. The schedule is anchored, so it never drifts."""

    name: str
    interval: float
    points: list[PointSpec]
    next_due: float = 0.0
    overruns: int = 0  # slots skipped because the link was too busy
    plan: list[ReadRequest] = field(default_factory=list)

    def advance(self, now: float) -> None:
        self.next_due += self.interval
        if self.next_due <= now:  # fell behind: skip to the next slot instead of bursting
            missed = int((now - self.next_due) // self.interval) + 1
            self.overruns += missed
            self.next_due += missed * self.interval


def stable_fraction(text: str) -> float:
    """A number in [0, 1) that depends only on `text`: start offsets that survive restarts."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big") / 2**32


class Device:
    source = "polled"  # the command service reaches it through the engine

    def __init__(self, config: DeviceConfig, resolved: ResolvedProfile, link_timeout: float) -> None:
        self.id = config.id
        self.config = config
        self.resolved = resolved
        self.unit = config.unit
        self.timeout = config.timeout or link_timeout
        self.pause = resolved.limits.pause
        self.points = {p.name: p for p in resolved.points}
        self.planner = ReadPlanner(resolved.limits, resolved.forbidden)
        self.health = DeviceHealth(
            config.poll, offline_after=config.offline_after, max_backoff=config.max_backoff, rng=random.Random(self.id)
        )
        self.reporter = Reporter(config.report)
        self.values: dict[str, Value] = {}
        self.errors: dict[str, str] = {}
        self.groups = self._groups()
        self.group_of = {p.name: g.name for g in self.groups for p in g.points}
        self.group_ts: dict[str, int] = {}  # epoch ms each poll group last finished a cycle

    def _groups(self) -> list[PollGroup]:
        intervals = {**self.resolved.profile.poll_groups, **self.config.poll_groups}
        members: dict[str | None, list[PointSpec]] = {}
        for p in self.resolved.points:
            if p.access.readable:
                members.setdefault(p.group, []).append(p)
        groups = []
        for name, points in members.items():
            interval = intervals.get(name, self.config.poll) if name else self.config.poll
            group = PollGroup(name or "default", interval, points)
            group.plan = self.planner.plan(points)
            groups.append(group)
        return groups

    def schedule(self, now: float) -> None:
        """First due times: spread over one interval by device id, so a hundred devices never fire together."""
        for group in self.groups:
            group.next_due = now + group.interval * stable_fraction(f"{self.id}/{group.name}")

    def point_ts(self, name: str) -> int | None:
        group = self.group_of.get(name)
        return None if group is None else self.group_ts.get(group)

    def describe(self) -> dict[str, Any]:
        config = self.config
        return {"link": config.link, "unit": config.unit, "poll_s": config.poll, "enabled": config.enabled}

    def replan(self) -> None:
        for group in self.groups:
            group.plan = self.planner.plan(group.points)

    def decode(self, request: ReadRequest, data: bytes) -> None:
        """Store the values carried by one answer (register bytes or packed bits)."""
        values, errors = self.values, self.errors
        if request.table.is_bits:
            for p, offset in request.points:
                values[p.name] = bool(data[offset >> 3] >> (offset & 7) & 1)
                errors.pop(p.name, None)
            return
        for p, offset in request.points:
            try:
                values[p.name] = p.codec.decode(data, offset)  # type: ignore[union-attr]
                errors.pop(p.name, None)
            except CodecError as exc:
                values.pop(p.name, None)
                errors[p.name] = exc.reason

    def fail(self, points: list[PointSpec] | tuple[tuple[PointSpec, int], ...], reason: str) -> None:
        """These points have no value this cycle: an error, never the last good value."""
        for item in points:
            name = item[0].name if isinstance(item, tuple) else item.name
            self.values.pop(name, None)
            self.errors[name] = reason

    def clear_all(self, reason: str) -> None:
        for name in self.points:
            if self.points[name].access.readable:
                self.values.pop(name, None)
                self.errors[name] = reason

    @staticmethod
    def timestamp() -> int:
        return int(time.time() * 1000)
