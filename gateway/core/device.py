"""A polled device: its points, poll groups, the requests its driver plans, latest values, health and reporting."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.config.model import DeviceConfig
from gateway.core.health import DeviceHealth
from gateway.core.reporting import Reporter
from gateway.points.types import Value
from gateway.profiles.expand import PointSpec, ResolvedProfile
from gateway.south.driver import LinkDriver, LinkSettings, link_driver


@dataclass
class PollGroup:
    """Points polled together at one interval. The schedule is anchored, so it never drifts."""

    name: str
    interval: float
    points: list[PointSpec]
    next_due: float = 0.0
    overruns: int = 0  # slots skipped because the link was too busy
    plan: list[Any] = field(default_factory=list)  # the driver's requests, in order

    def advance(self, now: float) -> int:
        """Move to the next slot; the slots skipped because the link was too busy (never burst to catch up)."""
        self.next_due += self.interval
        if self.next_due > now:
            return 0
        missed = int((now - self.next_due) // self.interval) + 1
        self.overruns += missed
        self.next_due += missed * self.interval
        return missed


def stable_fraction(text: str) -> float:
    """A number in [0, 1) that depends only on `text`: start offsets that survive restarts."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big") / 2**32


class Device:
    source = "polled"  # the command service reaches it through the engine

    def __init__(
        self, config: DeviceConfig, resolved: ResolvedProfile, link_timeout: float, driver: LinkDriver, address: Any
    ) -> None:
        self.id = config.id
        self.config = config
        self.resolved = resolved
        self.driver = driver
        self.timeout = config.timeout or link_timeout
        self.pause = 0.0  # silence after each request (the driver sets it from the profile)
        self.points = {p.name: p for p in resolved.points}
        self.screened = [p for p in resolved.points if p.plausible is not None and p.access.readable]
        self.health = DeviceHealth(
            config.poll, offline_after=config.offline_after, max_backoff=config.max_backoff, rng=random.Random(self.id)
        )
        self.reporter = Reporter(config.report)
        self.values: dict[str, Value] = {}
        self.errors: dict[str, str] = {}
        self.protocol_state = driver.prepare(self, address)
        self.groups = self._groups()
        self.group_of = {p.name: g.name for g in self.groups for p in g.points}
        self.group_ts: dict[str, int] = {}  # epoch ms each poll group last finished a cycle

    @classmethod
    def on_link(cls, config: DeviceConfig, resolved: ResolvedProfile, link: LinkSettings) -> Device:
        """The device as its link's driver runs it (the configuration's checks made sure it has an address)."""
        driver = link_driver(link)
        address, _ = driver.address(config)
        return cls(config, resolved, link.timeout, driver, address)

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
            group.plan = self.driver.plan(self, points)
            groups.append(group)
        return groups

    def schedule(self, now: float) -> None:
        """First due times: spread over one interval by device id, so a hundred devices never fire together."""
        for group in self.groups:
            group.next_due = now + group.interval * stable_fraction(f"{self.id}/{group.name}")

    @property
    def learned(self) -> dict[str, Any]:
        return self.health.learned

    def point_ts(self, name: str) -> int | None:
        group = self.group_of.get(name)
        return None if group is None else self.group_ts.get(group)

    def describe(self) -> dict[str, Any]:
        config = self.config
        where: dict[str, Any] = {"link": config.link}
        if config.unit is not None:
            where["unit"] = config.unit
        if config.address is not None:
            where["address"] = config.address
        return {**where, "poll_s": config.poll, "enabled": config.enabled}

    def same_device(self, other: Device) -> bool:
        """The same physical device (profile, link and address), whatever else of its settings changed."""
        mine, theirs = self.config, other.config
        return (self.resolved.profile.name, mine.link, mine.unit, mine.address) == (
            other.resolved.profile.name,
            theirs.link,
            theirs.unit,
            theirs.address,
        )

    def replan(self) -> None:
        for group in self.groups:
            group.plan = self.driver.plan(self, group.points)

    def fail(self, names: Iterable[str], reason: str) -> None:
        """These points have no value this cycle: an error, never the last good value."""
        for name in names:
            self.values.pop(name, None)
            self.errors[name] = reason

    def screen(self) -> int:
        """Readings outside their plausible range become errors ('implausible'); how many were found now."""
        found = 0
        for p in self.screened:
            value = self.values.get(p.name)
            if value is not None and p.implausible(value):
                del self.values[p.name]
                self.errors[p.name] = "implausible"
                found += 1
        self.health.implausible += found
        return found

    def clear_all(self, reason: str) -> None:
        self.fail((name for name, p in self.points.items() if p.access.readable), reason)

    @staticmethod
    def timestamp() -> int:
        return int(time.time() * 1000)
