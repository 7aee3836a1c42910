"""ReadPlanner: turn the points due in a cycle into the fewest reads a device allows.

Points of one table, sorted by address, are cut into consecutive groups; a group is
one read. A group is allowed when its span fits the device's `max_registers` (or
`max_bits`), every hole inside it is at most `max_gap`, no hole touches a forbidden
range, and it does not cross a split learned from an exception 02 nor exceed a read
length learned from an exception 03 or from long reads that time out while short ones
are answered. Every
sub-group of an allowed group is allowed too, so growing each group as far as it
goes (greedy) gives the fewest reads; tests check this against an exhaustive
dynamic program on random point sets.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gateway.profiles.expand import PointSpec
from gateway.south.modbus.pdu import READ_FUNCTION, read_request
from gateway.south.modbus.profile import Forbidden, Limits, Table, forbidden_hit, place


@dataclass(frozen=True, slots=True)
class ReadRequest:
    table: Table
    start: int
    count: int
    points: tuple[tuple[PointSpec, int], ...]  # each point with its offset (registers or bits) into the read
    pdu: bytes

    @property
    def function(self) -> int:
        return READ_FUNCTION[self.table]

    @property
    def end(self) -> int:
        return self.start + self.count - 1

    @property
    def point_names(self) -> tuple[str, ...]:
        return tuple(p.name for p, _ in self.points)


@dataclass(slots=True)
class Lessons:
    """What a device taught the planner; kept when the device's link or settings restart."""

    splits: dict[Table, list[int]] = field(default_factory=dict)  # never read across address a-1 | a
    longest: dict[bool, int] = field(default_factory=dict)  # bits?: the longest read it answers


class ReadPlanner:
    def __init__(self, limits: Limits, forbidden: Forbidden = (), lessons: Lessons | None = None) -> None:
        self.limits = limits
        self.forbidden = forbidden
        self.lessons = lessons or Lessons()

    @property
    def splits(self) -> dict[Table, list[int]]:
        return self.lessons.splits

    def top(self, table: Table, cap: int | None = None) -> int:
        """The longest read of this table the planner makes: the profile's limit, or less if learned."""
        top = self.limits.max_bits if table.is_bits else self.limits.max_registers
        top = min(top, self.lessons.longest.get(table.is_bits, top))
        return top if cap is None else min(top, cap)

    def plan(self, points: Iterable[PointSpec], cap: int | None = None) -> list[ReadRequest]:
        """The reads for these points; `cap` bounds their length further (to try a guess before keeping it)."""
        by_table: dict[Table, list[PointSpec]] = {}
        for p in points:
            by_table.setdefault(place(p).table, []).append(p)
        requests: list[ReadRequest] = []
        for table in Table:  # a stable order: coils, discrete inputs, holding, input registers
            members = sorted(by_table.get(table, ()), key=lambda p: (place(p).address, place(p).end))
            requests.extend(self._make(table, group) for group in self.groups(table, members, cap))
        return requests

    def groups(self, table: Table, members: Sequence[PointSpec], cap: int | None = None) -> list[list[PointSpec]]:
        """Greedy grouping of address-sorted points."""
        out: list[list[PointSpec]] = []
        top = self.top(table, cap)
        for p in members:
            if out and self.allowed(table, place(out[-1][0]).address, max(place(q).end for q in out[-1]), p, top):
                out[-1].append(p)
            else:
                out.append([p])
        return out

    def allowed(self, table: Table, start: int, end: int, p: PointSpec, top: int | None = None) -> bool:
        """May point `p` join a group spanning start..end (reads at most `top` long)?"""
        here = place(p)
        new_end = max(end, here.end)
        if top is None:
            top = self.top(table)
        if new_end - start + 1 > top:
            return False
        if here.address > end + 1 and (
            here.address - end - 1 > self.limits.max_gap or self._hits_forbidden(table, end + 1, here.address - 1)
        ):
            return False
        splits = self.splits.get(table)
        if splits:
            i = bisect.bisect_right(splits, start)
            if i < len(splits) and splits[i] <= new_end:
                return False
        return True

    def _hits_forbidden(self, table: Table, first: int, last: int) -> bool:
        return forbidden_hit(self.forbidden, table, first, last) is not None

    def _make(self, table: Table, group: list[PointSpec]) -> ReadRequest:
        start = place(group[0]).address
        end = max(place(p).end for p in group)
        count = end - start + 1
        points = tuple((p, place(p).address - start) for p in group)
        return ReadRequest(table, start, count, points, read_request(table, start, count))

    def shorter(self, request: ReadRequest) -> int | None:
        """The read length to try after `request` was too long for the device: half of it, at least its longest
        point; None when it carries one point (nothing shorter reads them all)."""
        if len(request.points) < 2:
            return None
        longest_point = max(place(p).registers for p, _ in request.points)
        return max(longest_point, request.count // 2)

    def keep_shorter(self, table: Table, count: int) -> None:
        self.lessons.longest[table.is_bits] = min(count, self.top(table))

    def split(self, request: ReadRequest) -> bool:
        """After exception 02 on a merged read: never merge across its middle again. False if it was one point."""
        starts = sorted({place(p).address for p, _ in request.points})
        if len(starts) < 2:
            return False
        cut = starts[len(starts) // 2]
        bisect.insort(self.splits.setdefault(request.table, []), cut)
        return True
