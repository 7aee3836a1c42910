"""ReadPlanner: every plan is valid, and never has more reads than the best possible merge."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.loader import load_config
from gateway.points.types import DataType
from gateway.profiles.expand import PointSpec, expand
from gateway.profiles.model import Access, Profile
from gateway.profiles.registry import ProfileRegistry
from gateway.south.modbus.planner import ReadPlanner, ReadRequest
from gateway.south.modbus.profile import Limits, ModbusPlace, Table, forbidden_ranges, place

ROOT = Path(__file__).resolve().parent.parent


def _point(name: str, table: Table, address: int, registers: int, dtype: DataType = DataType.UINT16) -> PointSpec:
    return PointSpec(
        name=name,
        dtype=dtype,
        access=Access.R,
        unit=None,
        min=None,
        max=None,
        plausible=None,
        scale=None,
        offset=None,
        decimals=None,
        enum=None,
        bits=None,
        device_class=None,
        state_class=None,
        control=None,
        category=None,
        entity=None,
        description=None,
        initial=None,
        group=None,
        origin=(),
        attributes=ModbusPlace(table, address, registers, None),
    )


def _optimal_count(planner: ReadPlanner, table: Table, points: list[PointSpec]) -> int:
    """Exhaustive reference: dp[j] = fewest reads for the first j points, trying every last group."""
    members = sorted(points, key=lambda p: (place(p).address, place(p).end))
    n = len(members)

    def feasible(i: int, j: int) -> bool:  # may members[i..j] be one read?
        start, end = place(members[i]).address, place(members[i]).end
        top = planner.limits.max_bits if table.is_bits else planner.limits.max_registers
        if end - start + 1 > top:
            return False
        for p in members[i + 1 : j + 1]:
            if not planner.allowed(table, start, end, p):
                return False
            end = max(end, place(p).end)
        return True

    best = [0] + [n + 1] * n
    for j in range(1, n + 1):
        for i in range(j):
            if best[i] + 1 < best[j] and feasible(i, j - 1):
                best[j] = best[i] + 1
    return best[n]


def _check_valid(planner: ReadPlanner, requests: list[ReadRequest], points: list[PointSpec]) -> None:
    carried = [p.name for r in requests for p, _ in r.points]
    assert sorted(carried) == sorted(p.name for p in points)  # every point exactly once
    limits = planner.limits
    for r in requests:
        top = limits.max_bits if r.table.is_bits else limits.max_registers
        assert 1 <= r.count <= top
        for p, offset in r.points:
            assert r.start + offset == place(p).address and place(p).end <= r.end
        for ftable, start, end in planner.forbidden:
            applies = ftable is r.table if ftable is not None else not r.table.is_bits
            assert not (applies and r.start <= end and r.end >= start), "a read touches a forbidden range"
        for cut in planner.splits.get(r.table, []):
            assert not r.start < cut <= r.end, "a read crosses a learned split"


@st.composite
def scenarios(draw: Any) -> tuple[ReadPlanner, list[PointSpec]]:
    table = draw(st.sampled_from(list(Table)))
    bits = table.is_bits
    limits = Limits(
        max_registers=draw(st.integers(1, 40)), max_bits=draw(st.integers(1, 64)), max_gap=draw(st.integers(0, 12))
    )
    forbidden = tuple(
        (None if draw(st.booleans()) else table, s, s + draw(st.integers(0, 5)))
        for s in draw(st.lists(st.integers(0, 300), max_size=3))
    )
    planner = ReadPlanner(limits, forbidden)
    top = limits.max_bits if bits else limits.max_registers
    address, points = 0, []
    for i in range(draw(st.integers(0, 30))):
        address += draw(st.integers(0, 15))
        width = 1 if bits else draw(st.integers(1, min(4, top)))
        clash = any(
            f[1] <= address + width - 1 and address <= f[2]
            for f in forbidden
            if f[0] is table or (f[0] is None and not bits)
        )
        if not clash:
            points.append(_point(f"p{i}", table, address, width))
            if not bits and width == 1 and draw(st.booleans()):  # a bit view sharing the register
                points.append(_point(f"p{i}b", table, address, 1, DataType.BIT))
        address += width
    starts = sorted({place(p).address for p in points if place(p).address > 0})
    if starts:  # splits are learned at point boundaries (see ReadPlanner.split)
        planner.splits[table] = sorted(set(draw(st.lists(st.sampled_from(starts), max_size=3))))
    return planner, points


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_plans_are_valid_and_optimal(case: tuple[ReadPlanner, list[PointSpec]]) -> None:
    planner, points = case
    requests = planner.plan(points)
    _check_valid(planner, requests, points)
    if points:
        assert len(requests) == _optimal_count(planner, place(points[0]).table, points)  # type: ignore[arg-type]


def test_random_point_sets_against_the_reference() -> None:
    """A deterministic sweep on top of hypothesis: 300 random sets, every one optimal."""
    rng = random.Random(2026)
    for _ in range(300):
        limits = Limits(max_registers=rng.randint(2, 125), max_gap=rng.randint(0, 20))
        planner = ReadPlanner(limits)
        address, points = rng.randint(0, 50), []
        for i in range(rng.randint(1, 60)):
            width = min(rng.choice([1, 2, 2, 4]), limits.max_registers)
            points.append(_point(f"p{i}", Table.HOLDING, address, width))
            address += width + rng.choice([0, 0, 1, 3, 10, 40])
        requests = planner.plan(points)
        _check_valid(planner, requests, points)
        assert len(requests) == _optimal_count(planner, Table.HOLDING, points)


def test_sdm630_is_three_reads_instead_of_seventeen() -> None:
    resolved, _ = expand(ProfileRegistry().load("eastron-sdm630")[0])
    planner = ReadPlanner(resolved.limits, forbidden_ranges(resolved.limits))
    requests = planner.plan(resolved.points)
    assert [(r.start, r.count) for r in requests] == [(0x00, 0x12), (0x34, 0x18), (0x156, 2)]
    assert len(resolved.points) == 17


def test_tables_are_planned_separately_and_bits_pack() -> None:
    planner = ReadPlanner(Limits(max_gap=2))
    points = [
        _point("c0", Table.COIL, 0, 1, DataType.BOOL),
        _point("c9", Table.COIL, 9, 1, DataType.BOOL),
        _point("h0", Table.HOLDING, 0, 1),
        _point("i0", Table.INPUT, 0, 1),
    ]
    requests = planner.plan(points)
    assert [(r.table, r.start, r.count) for r in requests] == [
        (Table.COIL, 0, 1),
        (Table.COIL, 9, 1),
        (Table.HOLDING, 0, 1),
        (Table.INPUT, 0, 1),
    ]
    assert requests[0].pdu == bytes([1, 0, 0, 0, 1])


def test_split_after_exception_02_is_remembered() -> None:
    planner = ReadPlanner(Limits(max_gap=10))
    points = [_point(f"p{a}", Table.HOLDING, a, 1) for a in (0, 4, 8, 12)]
    (merged,) = planner.plan(points)
    assert planner.split(merged)
    first, second = planner.plan(points)
    assert (first.start, first.count, second.start, second.count) == (0, 5, 8, 5)
    single = planner.plan(points[:1])[0]
    assert planner.split(single) is False  # one point cannot be split further


def test_plan_of_the_shipped_example(capsys: pytest.CaptureFixture[str]) -> None:
    loaded = load_config(ROOT / "examples" / "cabinet-17.yaml")
    lamps = loaded.devices["lamps-line-0"]
    requests = ReadPlanner(lamps.limits, forbidden_ranges(lamps.limits)).plan(
        p for p in lamps.points if p.access.readable
    )
    readable = [p for p in lamps.points if p.access.readable]
    assert len(requests) < len(readable) / 10
    assert all(r.count <= 120 for r in requests)


def test_profile_limits_are_respected_by_point_size(tmp_path: Any) -> None:
    text = (
        "name: big\nmanufacturer: m\nmodel: m\ndescription: d\nsource: s\nlimits: {max_registers: 4}\n"
        "points:\n  text: {table: holding, address: 0, type: string, length: 20}\n"
    )
    path = tmp_path / "big.yaml"
    path.write_text(text)
    from gateway.common.problems import ConfigError
    from gateway.profiles.registry import load_profile

    with pytest.raises(ConfigError, match="point needs 10 registers but the device reads at most 4 at once"):
        load_profile(path)
    assert Profile  # the model is importable for type checkers
