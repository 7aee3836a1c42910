"""Indicators worked out by hand: lamp availability and failures per month from failure bits, time above warning
levels with a gap that is not invented, and every counter kept across a restart (and a hostile kept file)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.core.events import DeviceUpdate, EventBus
from gateway.edge.clock import SimulatedClock
from gateway.edge.indicators.settings import IndicatorSettings
from gateway.edge.indicators.tracker import Indicators
from gateway.edge.lighting.controller import LightingChanged
from tests.test_config_hostile import HEADER, _bounded_check

MADRID = ZoneInfo("Europe/Madrid")
SETTINGS = IndicatorSettings.model_validate(
    {
        "groups": {"street": {"lamps": 10, "watts": 50,
                              "failures": {"device": "lamps", "points": "ballast_*_lamp_failure"}}},
        "levels": {"river": {"device": "river", "point": "level", "warnings": {"high": 2.5, "flood": 3.2},
                             "max_gap": 600}},
    }
)  # fmt: skip


def _indicators(path: Path, clock: SimulatedClock) -> tuple[Indicators, EventBus]:
    bus = EventBus()
    indicators = Indicators(SETTINGS, bus, clock, path, timezone="Europe/Madrid")
    indicators.start()
    return indicators, bus


async def _to(clock: SimulatedClock, when: datetime) -> None:
    await clock.advance((when - clock.now()).total_seconds())


def _lamp(bus: EventBus, ballast: int, failed: bool) -> None:
    bus.publish(DeviceUpdate("lamps", 0, {f"ballast_{ballast}_lamp_failure": failed, "ballast_0_level": 3.0}, {}, 0))


async def test_availability_and_failures_per_month_worked_out_by_hand(tmp_path: Path) -> None:
    """Ten lamps lit from 20:00 to 06:00 (10 h, 100 lamp-hours). Lamp 3 fails at 01:00 (5 h down, 5 lamp-hours),
    lamp 7 at 05:00 (1 h down). Working: 100 - 5 - 1 = 94 lamp-hours: 94 % available. The night of 30 Nov to
    1 Dec in Madrid: lamp 3 failed in December (01:00 local), so did lamp 7; a lamp that was already down and
    still reports its bit is not a new failure; a repaired lamp that fails again is."""
    clock = SimulatedClock(datetime(2026, 11, 30, 20, 0, tzinfo=MADRID))
    indicators, bus = _indicators(tmp_path / "indicators.json", clock)
    for ballast in range(10):
        _lamp(bus, ballast, False)
    bus.publish(LightingChanged("street", 100.0, "program"))
    await _to(clock, datetime(2026, 12, 1, 1, 0, tzinfo=MADRID))
    _lamp(bus, 3, True)
    await _to(clock, datetime(2026, 12, 1, 3, 0, tzinfo=MADRID))
    _lamp(bus, 3, True)  # reported again: the same failure
    await _to(clock, datetime(2026, 12, 1, 5, 0, tzinfo=MADRID))
    _lamp(bus, 7, True)
    await _to(clock, datetime(2026, 12, 1, 6, 0, tzinfo=MADRID))
    bus.publish(LightingChanged("street", 0.0, "program"))
    await _to(clock, datetime(2026, 12, 1, 12, 0, tzinfo=MADRID))  # daylight: off, it costs no availability
    street = indicators.snapshot()["groups"]["street"]
    assert street["burning_hours"] == 10.0
    assert street["availability_percent"] == 94.0, street
    assert street["lamps_failed"] == 2 and street["failures_per_month"] == {"2026-12": 2}, street
    _lamp(bus, 3, False)  # repaired, and failing again in January
    await _to(clock, datetime(2027, 1, 2, 22, 0, tzinfo=MADRID))
    _lamp(bus, 3, True)
    street = indicators.snapshot()["groups"]["street"]
    assert street["failures_per_month"] == {"2026-12": 2, "2027-01": 1} and street["lamps_failed"] == 2


async def test_time_above_warning_levels_with_a_gap_that_is_not_invented(tmp_path: Path) -> None:
    """Readings every 5 minutes: 2.4, 2.6, 2.7, 3.3, 3.4, 2.6, then silence for an hour (the logger offline),
    then 2.6, 2.4. Above high (2.5): from the 2.6 at 00:05 to the 2.6 at 00:25 is 4 intervals, 20 min, plus
    nothing across the hour gap, plus 5 min from the 2.6 after the gap to the 2.4: 25 min. Above flood (3.2):
    the 3.3 and the 3.4 are followed by a reading 5 minutes later each: 10 min. Exceedances: one each (the level
    never read below high between 00:05 and 01:30: one excursion, gap or not)."""
    start = datetime(2026, 11, 15, 0, 0, tzinfo=MADRID)
    clock = SimulatedClock(start)
    indicators, bus = _indicators(tmp_path / "indicators.json", clock)
    readings = [(0, 2.4), (5, 2.6), (10, 2.7), (15, 3.3), (20, 3.4), (25, 2.6), (85, 2.6), (90, 2.4)]
    for minute, value in readings:
        await _to(clock, start + timedelta(minutes=minute))
        bus.publish(DeviceUpdate("river", 0, {"level": value}, {}, 0))
    bus.publish(DeviceUpdate("river", 0, {"level": float("nan")}, {}, 0))  # says nothing
    river = indicators.snapshot()["levels"]["river"]
    assert river["hours_above"] == {"high": round(25 / 60, 4), "flood": round(10 / 60, 4)}, river
    assert river["exceedances"] == {"high": 1, "flood": 1} and river["above"] == [] and river["peak"] == 3.4


async def test_every_indicator_survives_a_restart_and_a_hostile_file_costs_only_the_counts(tmp_path: Path) -> None:
    path = tmp_path / "indicators.json"
    clock = SimulatedClock(datetime(2026, 12, 1, 20, 0, tzinfo=MADRID))
    indicators, bus = _indicators(path, clock)
    bus.publish(LightingChanged("street", 50.0, "program"))
    _lamp(bus, 1, True)
    await _to(clock, datetime(2026, 12, 1, 22, 0, tzinfo=MADRID))
    bus.publish(DeviceUpdate("river", 0, {"level": 2.8}, {}, 0))
    await _to(clock, datetime(2026, 12, 1, 22, 5, tzinfo=MADRID))
    bus.publish(DeviceUpdate("river", 0, {"level": 2.9}, {}, 0))
    before = indicators.snapshot()
    indicators.stop()  # kept
    # the gateway is back: the counts go on from where they were; the bit still true is not a new failure
    again, bus = _indicators(path, clock)
    _lamp(bus, 1, True)
    after = again.snapshot()
    assert after["groups"] == before["groups"] and after["levels"] == before["levels"], (before, after)
    assert after["groups"]["street"]["energy_kwh"] == 0.5208  # 10 x 50 W x 50 % x 2 h 5 min
    again.stop()
    for hostile in ("{", '{"groups": {"street": {"burning_s": -5}}}', '{"groups": {"street": {"energy_wh": NaN}}}',
                    '{"groups": []}', "[" * 10000):  # fmt: skip
        path.write_text(hostile)
        fresh, _ = _indicators(path, clock)
        assert fresh.snapshot()["groups"]["street"]["burning_hours"] == 0.0


HOSTILE = [
    ("levels: {river: {device: meter, point: voltage_l1, warnings: {}}}", "warnings: has 0 items, at least 1 allowed"),
    ("levels: {river: {device: meter, point: voltage_l1, warnings: {high: .nan}}}", "must be a finite number"),
    ("levels: {river: {device: metre, point: voltage_l1, warnings: {high: 1}}}", "unknown device 'metre'"),
    ("levels: {river: {device: meter, point: level, warnings: {high: 1}}}", "meter has no point 'level'"),
    ("timezone: Mars/Base", "unknown time zone 'Mars/Base'"),
]


@pytest.mark.parametrize(("section", "says"), HOSTILE, ids=[s[:40] for s, _ in HOSTILE])
def test_hostile_indicator_settings_are_refused_at_their_line(section: str, says: str, tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        HEADER + "links:\n  - {id: net, type: modbus-tcp, host: 127.0.0.1}\n"
        "devices:\n  - {id: meter, profile: eastron-sdm630, link: net, unit: 1}\n"
        f"indicators:\n  {section}\n"
    )
    code, out = _bounded_check(path)
    assert code == 2 and says in out and f"{path}:7:" in out and "Traceback" not in out, out
