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
from gateway.profiles.model import Limits, Table
from gateway.south.modbus.pdu import READ_FUNCTION, read_request

Forbidden = tuple[tuple[Table | None, int, int], ...]


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


class ReadPlanner:
    def __init__(self, limits: Limits, forbidden: Forbidden = ()) -> None:
        self.limits = limits
        self.forbidden = forbidden
        self.splits: dict[Table, list[int]] = {}  # learned: never read across address a-1 | a

    def plan(self, points: Iterable[PointSpec]) -> list[ReadRequest]:
        by_table: dict[Table, list[PointSpec]] = {}
        for p in points:
            if p.table is not None:
                by_table.setdefault(p.table, []).append(p)
        requests: list[ReadRequest] = []
        for table in Table:  # a stable order: coils, discrete inputs, holding, input registers
            members = sorted(by_table.get(table, ()), key=lambda p: (p.address, p.end))
            requests.extend(self._make(table, group) for group in self.groups(table, members))
        return requests

    def groups(self, table: Table, members: Sequence[PointSpec]) -> list[list[PointSpec]]:
        """Greedy grouping of address-sorted points."""
        out: list[list[PointSpec]] = []
        for p in members:
            if out and self.allowed(table, out[-1][0].address, max(q.end for q in out[-1]), p):
                out[-1].append(p)
            else:
                out.append([p])
        return out

    def allowed(self, table: Table, start: int, end: int, p: PointSpec) -> bool:
        """May point `p` join a group spanning start..end?"""
        new_end = max(end, p.end)
        top = self.limits.max_bits if table.is_bits else self.limits.max_registers
        if new_end - start + 1 > top:
            return False
        if p.address > end + 1 and (
            p.address - end - 1 > self.limits.max_gap or self._hits_forbidden(table, end + 1, p.address - 1)
        ):
            return False
        splits = self.splits.get(table)
        if splits:
            i = bisect.bisect_right(splits, start)
            if i < len(splits) and splits[i] <= new_end:
                return False
        return True

    def _hits_forbidden(self, table: Table, first: int, last: int) -> bool:
        for ftable, fstart, fend in self.forbidden:
            applies = ftable is table if ftable is not None else not table.is_bits
            if applies and first <= fend and last >= fstart:
                return True
        return False

    def _make(self, table: Table, group: list[PointSpec]) -> ReadRequest:
        start = group[0].address
        end = max(p.end for p in group)
        count = end - start + 1
        return ReadRequest(
            table, start, count, tuple((p, p.address - start) for p in group), read_request(table, start, count)
        )

    def split(self, request: ReadRequest) -> bool:
        """After exception 02 on a merged read: never merge across its middle again. False if it was one point."""
        starts = sorted({p.address for p, _ in request.points})
        if len(starts) < 2:
            return False
        cut = starts[len(starts) // 2]
        bisect.insort(self.splits.setdefault(request.table, []), cut)
        return True
