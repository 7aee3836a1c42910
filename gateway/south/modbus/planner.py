"""ReadPlanner: turn the points due in a cycle into the fewest reads a device allows.

Points of one table, sorted by address, are cut into consecutive groups; a group is
one read. A group is allowed when its span fits the device's `max_registers` (or
`max_bits`), every hole inside it is at most `max_gap`, no hole touches a forbidden
range, and it does not cross a split learned from an exception 02. Every
sub-group of an allowed group is allowed too, so growing each group as far as it
goes (greedy) gives the fewest reads; tests check this against an exhaustive
dynamic program on random point sets.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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


class ReadPlanner:
    def __init__(self, limits: Limits, forbidden: Forbidden = ()) -> None:
        self.limits = limits
        self.forbidden = forbidden
        self.splits: dict[Table, list[int]] = {}  # learned: never read across address a-1 | a

    def plan(self, points: Iterable[PointSpec]) -> list[ReadRequest]:
        by_table: dict[Table, list[PointSpec]] = {}
        for p in points:
            by_table.setdefault(place(p).table, []).append(p)
        requests: list[ReadRequest] = []
        for table in Table:  # a stable order: coils, discrete inputs, holding, input registers
            members = sorted(by_table.get(table, ()), key=lambda p: (place(p).address, place(p).end))
            requests.extend(self._make(table, group) for group in self.groups(table, members))
        return requests

    def groups(self, table: Table, members: Sequence[PointSpec]) -> list[list[PointSpec]]:
        """Greedy grouping of address-sorted points."""
        out: list[list[PointSpec]] = []
        for p in members:
            if out and self.allowed(table, place(out[-1][0]).address, max(place(q).end for q in out[-1]), p):
                out[-1].append(p)
            else:
                out.append([p])
        return out

    def allowed(self, table: Table, start: int, end: int, p: PointSpec) -> bool:
        """May point `p` join a group spanning start..end?"""
        here = place(p)
        new_end = max(end, here.end)
        top = self.limits.max_bits if table.is_bits else self.limits.max_registers
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

    def split(self, request: ReadRequest) -> bool:
        """After exception 02 on a merged read: never merge across its middle again. False if it was one point."""
        starts = sorted({place(p).address for p, _ in request.points})
        if len(starts) < 2:
            return False
        cut = starts[len(starts) // 2]
        bisect.insort(self.splits.setdefault(request.table, []), cut)
        return True
