"""Lighting programs at the edge: a night in Barcelona in seconds on a simulated clock, against an emulated DALI
gateway, with the broker up and with it down from dusk to dawn; daylight-saving nights; the polar night."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from gateway.app import Gateway
from gateway.core.events import CommandAudited, DeviceUpdate
from gateway.edge.clock import SimulatedClock
from gateway.edge.lighting.program import Calendar, Rule, Site, SwitchPoint, in_force, local, sun_on
from hil.broker import MosquittoBroker
from hil.fixtures import SiteFactory
from tests.mqtt_harness import Watcher
from tests.test_config_hostile import HEADER, _bounded_check
from tests.waiting import until

MADRID = ZoneInfo("Europe/Madrid")
BARCELONA = Site(latitude=41.3874, longitude=2.1686, timezone="Europe/Madrid")
TROMSO = Site(latitude=69.6492, longitude=18.9553, timezone="Europe/Oslo")
NIGHT = [
    SwitchPoint(at="sunset+10m", level=100),
    SwitchPoint(at="00:30", level=50, ramp=120),
    SwitchPoint(at="sunrise-15m", level=0),
]
PROGRAMS = {"night": NIGHT}
CALENDAR = Calendar(default="night")


def at(text: str, zone: ZoneInfo = MADRID) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone)


def test_barcelonas_published_sun_times() -> None:
    # Published for Barcelona: sunset on Saturday 27 June at 21:30:10 CEST, the latest of the year (betevé,
    # "posta de sol més tard any"; RTVE Catalunya, 27 June 2022), and sunrise on 15 June 2021 at 06:17:13
    # (RTVE Catalunya, 15 June 2021). astral, for the city centre, agrees within two minutes (the published
    # figures are for a reference point and refraction of their own).
    sunset = sun_on(BARCELONA, date(2026, 6, 27)).sunset
    sunrise = sun_on(BARCELONA, date(2021, 6, 15)).sunrise
    assert sunset is not None and sunrise is not None
    assert abs((sunset - at("2026-06-27T21:30:10")).total_seconds()) < 120
    assert abs((sunrise - at("2021-06-15T06:17:13")).total_seconds()) < 60


def test_the_level_in_force_at_any_moment_of_a_night_even_after_a_restart() -> None:
    def level(moment: str) -> tuple[float, str]:
        last, _ = in_force(BARCELONA, CALENDAR, PROGRAMS, at(moment))
        assert last is not None
        return last.level, last.at

    assert level("2026-06-27T21:00") == (0, "sunrise-15m")  # the day's, this morning's
    assert level("2026-06-27T21:40") == (100, "sunset+10m")
    assert level("2026-06-28T03:00") == (50, "00:30")  # a gateway starting at 03:00 knows, without seeing 00:30
    assert level("2026-06-28T06:10") == (0, "sunrise-15m")
    # a calendar rule: on Sant Joan the lamps stay full all night
    festival = Calendar(default="night", rules=[Rule(program="festival", dates=[date(2026, 6, 23)])])
    programs = {**PROGRAMS, "festival": [SwitchPoint(at="sunset", level=100), SwitchPoint(at="sunrise", level=0)]}
    last, _ = in_force(BARCELONA, festival, programs, at("2026-06-23T23:59"))
    assert last is not None and (last.program, last.level) == ("festival", 100)


def _switches(site: Site, start: datetime, end: datetime, programs: dict[str, list[SwitchPoint]]) -> list[Any]:
    """Every switch between two moments, as the controller would see them one after the other."""
    seen = []
    now = start
    while True:
        _, upcoming = in_force(site, Calendar(default="p"), programs, now)
        if upcoming is None or upcoming.when > end:
            return seen
        seen.append((upcoming.when.astimezone(site.zone), upcoming.at, upcoming.level))
        now = upcoming.when


def test_nights_across_daylight_saving_changes_switch_each_point_once() -> None:
    programs = {
        "p": [SwitchPoint(at="01:00", level=70), SwitchPoint(at="02:30", level=40), SwitchPoint(at="05:00", level=0)]
    }
    # 29 March 2026: at 02:00 CET the clocks go to 03:00 CEST; 02:30 does not exist and happens at 03:30 CEST
    spring = _switches(BARCELONA, at("2026-03-28T23:00"), at("2026-03-29T06:00"), programs)
    assert [(w.strftime("%H:%M %Z"), a) for w, a, _ in spring] == [
        ("01:00 CET", "01:00"), ("03:30 CEST", "02:30"), ("05:00 CEST", "05:00"),
    ]  # fmt: skip
    # 25 October 2026: at 03:00 CEST the clocks go back to 02:00 CET; 02:30 happens twice and is switched once
    autumn = _switches(BARCELONA, at("2026-10-24T23:00"), at("2026-10-25T06:00"), programs)
    assert [(w.strftime("%H:%M %Z"), a) for w, a, _ in autumn] == [
        ("01:00 CEST", "01:00"), ("02:30 CEST", "02:30"), ("05:00 CET", "05:00"),
    ]  # fmt: skip
    assert local(BARCELONA, date(2026, 3, 29), time(2, 30)) == at("2026-03-29T03:30")


def test_the_polar_night_and_the_midnight_sun() -> None:
    oslo = ZoneInfo("Europe/Oslo")
    winter = sun_on(TROMSO, date(2026, 12, 21))
    summer = sun_on(TROMSO, date(2026, 6, 21))
    assert (winter.sunrise, winter.sunset, winter.polar) == (None, None, "night")
    assert (summer.sunrise, summer.sunset, summer.polar) == (None, None, "day")
    # polar night: no sunrise, sunset at midnight: the night's levels all day (dimmed after 00:30)
    last, _ = in_force(TROMSO, CALENDAR, PROGRAMS, at("2026-12-21T12:00", oslo))
    assert last is not None and (last.at, last.level) == ("00:30", 50)
    last, _ = in_force(TROMSO, CALENDAR, PROGRAMS, at("2026-12-21T00:10", oslo))
    assert last is not None and (last.at, last.level) == ("sunset+10m", 100)
    # midnight sun: no sunset, no night: only the switch off happens, at midnight; off all day
    last, _ = in_force(TROMSO, CALENDAR, PROGRAMS, at("2026-06-21T12:00", oslo))
    assert last is not None and last.level == 0 and last.at == "sunrise-15m"


# -- a night against an emulated DALI gateway, through the whole gateway --------------------------------

SITE: dict[str, Any] = {
    "links": [{"id": "dali-net", "type": "modbus-tcp"}],
    "devices": [
        {"id": "lamps", "profile": "dali-modbus-gateway", "link": "dali-net", "unit": 2,
         "params": {"ballasts": 4, "groups": 2}, "poll": 1, "options": {"initial_level": 80, "fade_time": 0}},
    ],
}  # fmt: skip


def _lighting() -> dict[str, Any]:
    return {
        "site": {"latitude": 41.3874, "longitude": 2.1686, "timezone": "Europe/Madrid"},
        "programs": {"night": [p.model_dump() for p in NIGHT]},
        "calendar": {"default": "night"},
        "stagger": 1,
        "targets": [
            {"id": "street", "device": "lamps", "point": "group_0_arc_power", "feeder": "f1"},
            {"id": "square", "device": "lamps", "point": "group_1_arc_power", "feeder": "f1",
             "motion": {"device": "pole-1", "point": "motion", "level": 100, "hold": 300, "combine": "max"}},
        ],
    }  # fmt: skip


def _gateway_file(site: Any, mosquitto: MosquittoBroker, tmp_path: Path, name: str = "gw", **sections: Any) -> Path:
    """The gateway configuration of `site` with the lighting of these tests (and pole-1, the square's sensor node);
    `sections` replace or add top-level sections."""
    from hil.site.scenario import gateway_config

    data = gateway_config(site.loaded, site.endpoint_addresses())
    data["gateway"] = {"id": "block", "health_interval": 1}
    data["mqtt"] = {"host": mosquitto.host, "port": mosquitto.port, "keepalive": 5}
    data["store"] = {"path": str(tmp_path / f"outbox-{name}.db")}
    data["lighting"] = _lighting()
    data["nodes"] = [{"id": "pole-1"}]
    data.update(sections)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


async def _until(check: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    await until(check, timeout, what)


async def _night(
    site: Any, mosquitto: MosquittoBroker, tmp_path: Path, broker_down: bool
) -> list[tuple[str, str, float]]:
    path = _gateway_file(site, mosquitto, tmp_path, f"gw-{broker_down}")
    clock = SimulatedClock(at("2026-06-27T21:00"))
    gateway = Gateway(path, clock=clock)
    switched: list[tuple[str, str, float]] = []

    def audited(event: CommandAudited) -> None:
        if event.status == "ok" and event.sender and event.sender.get("via") == "lighting":
            for point, value in (event.values or {}).items():
                switched.append((clock.now().astimezone(MADRID).strftime("%H:%M:%S"), point, float(value)))  # type: ignore[arg-type]

    gateway.bus.subscribe(CommandAudited, audited)
    await gateway.start()
    try:
        await _until(lambda: len(switched) >= 1, "the level in force at start")
        await clock.advance(1)
        await _until(lambda: len(switched) >= 2, "the second group, staggered")
        assert site.get_value("lamps", "ballast_0_arc_power") == 0  # 21:00: still day
        if broker_down:
            mosquitto.stop()  # dusk to dawn without a broker
        await clock.run_until(at("2026-06-27T21:45"), step=30)
        await _until(lambda: len(switched) >= 4, "the switch on at sunset")
        assert (
            site.get_value("lamps", "ballast_0_arc_power") == 100
            and site.get_value("lamps", "ballast_1_arc_power") == 100
        )
        await clock.run_until(at("2026-06-28T00:35"), step=600)
        await _until(lambda: len(switched) >= 6, "the dimming at 00:30")
        # motion at the square at 01:00: up to 100 for the hold, then back to 50
        await clock.run_until(at("2026-06-28T01:00"), step=600)
        gateway.bus.publish(DeviceUpdate("pole-1", 0, {"motion": True}, {}, 0.0))
        await _until(lambda: len(switched) >= 7, "the square raised by motion")
        await clock.run_until(at("2026-06-28T01:06"), step=60)
        await _until(lambda: len(switched) >= 8, "the square back after the hold")
        await clock.run_until(at("2026-06-28T06:10"), step=1800)
        await _until(lambda: len(switched) >= 10, "the switch off before sunrise")
        assert site.get_value("lamps", "ballast_1_arc_power") == 0
    finally:
        await gateway.stop()
        if broker_down:
            mosquitto.start()
    return switched


async def test_a_night_in_barcelona_with_and_without_the_broker(
    site_factory: SiteFactory, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    site = await site_factory(SITE)
    up = await _night(site, mosquitto, tmp_path, broker_down=False)
    assert up == [
        ("21:00:00", "group_0_arc_power", 0.0),  # at start: the morning's switch off is in force
        ("21:00:01", "group_1_arc_power", 0.0),  # the same feeder, one stagger later
        ("21:38:39", "group_0_arc_power", 100.0),  # sunset (21:28:39) + 10 min
        ("21:38:40", "group_1_arc_power", 100.0),
        ("00:30:00", "group_0_arc_power", 50.0),
        ("00:30:01", "group_1_arc_power", 50.0),
        ("01:00:00", "group_1_arc_power", 100.0),  # motion at the square
        ("01:05:00", "group_1_arc_power", 50.0),  # the hold of 300 s is over
        ("06:05:29", "group_0_arc_power", 0.0),  # sunrise (06:20:29) - 15 min
        ("06:05:30", "group_1_arc_power", 0.0),
    ], up
    down = await _night(site, mosquitto, tmp_path, broker_down=True)
    assert down == up  # dusk to dawn without a broker: the same switches at the same times


async def test_an_operator_overrides_a_target_over_mqtt(
    site_factory: SiteFactory, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    site = await site_factory(SITE)
    path = _gateway_file(site, mosquitto, tmp_path)
    clock = SimulatedClock(at("2026-06-27T23:00"))
    w = Watcher(mosquitto)
    await w.start()
    gateway = Gateway(path, clock=clock)
    await gateway.start()
    base = "cityedge/block"
    try:
        lighting = gateway.lighting
        assert lighting is not None
        await _until(lambda: lighting.sent >= 1, "the first target set")
        await clock.advance(1)  # the second target on the feeder, one stagger later
        await _until(lambda: lighting.sent >= 2, "the second target set")
        state = await w.wait_for(lambda s: s.topic == f"{base}/lighting/street", what="state")
        assert state.json()["level"] == 100 and state.json()["reason"] == "program"
        answer = await w.request(base, "override", {"target": "street", "level": 20, "duration": 600, "by": "ana"})
        assert answer["status"] == "ok" and answer["data"]["reason"] == "override", answer
        await _until(lambda: site.get_value("lamps", "ballast_0_arc_power") == 20, "the override on the lamps")
        over = await w.wait_for(lambda s: s.topic == f"{base}/lighting/street" and s.json()["reason"] == "override")
        assert over.json()["target_level"] == 100 and "ana until" in over.json()["detail"]
        audit = await w.wait_for(
            lambda s: (
                s.topic == f"{base}/event"
                and s.json().get("kind") == "command"
                and s.json()["values"].get("group_0_arc_power") == 20
            )
        )
        assert audit.json()["sender"]["via"] == "lighting" and audit.json()["sender"]["reason"] == "override"
        hostile = [
            ({"target": "nope", "level": 1}, "unknown_target"),
            ({"target": "street", "level": 101}, "out_of_range"),
            ({"target": "street", "level": float("nan")}, "out_of_range"),
            ({"target": "street", "level": True}, "out_of_range"),
            ({"target": "street", "level": 5, "duration": 1e400}, "out_of_range"),
            ({"target": "street", "level": 5, "until": "2026-06-27T23:30"}, "bad_value"),
            ({"target": "street", "level": 5, "until": "tomorrow"}, "bad_value"),
            ({"target": [[[[1]]]], "level": 5}, "unknown_target"),
            ({"target": "street", "level": 5, "colour": "red"}, "bad_json"),
        ]
        for bad, code in hostile:
            refused = await w.request(base, "override", bad)
            assert refused["error"]["code"] == code, (bad, refused)
        await clock.advance(601)
        await _until(lambda: site.get_value("lamps", "ballast_0_arc_power") == 100, "back to the program")
        status = await w.request(base, "lighting", {})
        assert status["data"]["street"]["reason"] == "program"
    finally:
        await gateway.stop()
        await w.stop()


# -- the lighting section of a configuration, hostile ------------------------------------------------

LINKED = HEADER + (
    "links:\n  - {id: net, type: modbus-tcp, host: 127.0.0.1}\n"
    "devices:\n  - {id: lamps, profile: dali-modbus-gateway, link: net, unit: 2, params: {ballasts: 4, groups: 2}}\n"
    "nodes:\n  - {id: pole-1}\n"
)
SECTION = (
    "lighting:\n"
    "  site: {latitude: 41.39, longitude: 2.17, timezone: Europe/Madrid}\n"
    "  programs: {night: [{at: sunset, level: 100}, {at: sunrise, level: 0}]}\n"
    "  calendar: {default: night}\n"
    "  targets:\n"
    "    - {id: street, device: lamps, point: group_0_arc_power}\n"
)
TARGET = "    - {id: street, device: lamps, point: group_0_arc_power}\n"
HOSTILE = [
    ("{at: sunset, level: 100}", "{at: sunset+9h, level: 100}", "more than 6h from the sun"),
    ("{at: sunset, level: 100}", "{at: '25:00', level: 100}", "hours go to 23, not 25"),
    ("{at: sunset, level: 100}", "{at: noonish, level: 100}", "is not HH:MM, sunset, sunrise"),
    ("{at: sunset, level: 100}", "{at: sunset, level: .nan}", "level: must be a finite number"),
    ("{at: sunset, level: 100}", "{at: sunset, level: 1e400}", "level: must be a finite number"),
    ("{at: sunset, level: 100}", "{at: sunset, level: 150}", "level: must be between 0 and 100"),
    ("Europe/Madrid", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ("latitude: 41.39", "latitude: 91", "latitude: must be between -90 and 90"),
    ("{default: night}", "{default: day}", "the calendar names program 'day'"),
    ("point: group_0_arc_power", "point: ballast_0_level", "'ballast_0_level' is not a writable point of lamps"),
    ("device: lamps,", "device: lampz,", "unknown device 'lampz'"),
    ("point: group_0_arc_power}", "point: group_0_arc_power, motion: {device: pole-9}}",
     "unknown device or node 'pole-9'"),
    (TARGET, TARGET + "indicators: {groups: {street: {lamps: 2, watts: .nan}}}\n", "watts: must be a finite number"),
    (TARGET, TARGET + "indicators: {groups: {strete: {lamps: 2, watts: 50}}}\n", "'strete' is not a lighting target"),
    (TARGET, TARGET + "indicators: {groups: {street: {lamps: 1e400, watts: 5}}}\n", "lamps: "),
    (TARGET, TARGET + "indicators: {feeders: {f1: {device: lamps, point: kwh}}}\n", "lamps has no point 'kwh'"),
    ("point: group_0_arc_power}", "point: group_0_arc_power, photocell: {device: pole-1, on_below: 50, off_above: 10}}",
     "off_above must be above on_below"),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "says"), HOSTILE, ids=[n[:30] for _, n, _ in HOSTILE])
def test_hostile_lighting_settings_are_refused_at_their_line(old: str, new: str, says: str, tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    text = LINKED + SECTION
    assert old in text
    path.write_text(text.replace(old, new, 1))
    code, out = _bounded_check(path)
    assert code == 2 and says in out and "Traceback" not in out, out
    assert f"{path}:" in out and "lighting" in out


async def test_motion_from_an_emulated_pole_node_raises_the_square_for_its_hold(
    site_factory: SiteFactory, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """The real node firmware (MicroPython unix port) reports its PIR; the square goes up for the hold, then back."""
    from hil.esp32.node import NodeEmulator

    site = await site_factory(SITE)
    path = _gateway_file(site, mosquitto, tmp_path)
    clock = SimulatedClock(at("2026-06-28T00:40"))
    gateway = Gateway(path, clock=clock)
    await gateway.start()
    hardware = {"i2c": {"35": {"read": "0020"}}, "pins": {"4": 0}, "adc": {"34": 40000}}
    node = NodeEmulator(tmp_path / "pole-1", "pole-1", mosquitto.host, mosquitto.port,
                        config={"sensors": [{"type": "bh1750"}, {"type": "pir", "pin": 4}], "interval": 1},
                        hardware=hardware)  # fmt: skip
    lighting = gateway.lighting
    assert lighting is not None
    square = lighting.targets["square"]
    try:
        await _until(lambda: lighting.sent >= 1, "the first target set")
        await clock.advance(1)
        await _until(lambda: square.level == 50, "the square at the night's 50 %")
        await node.start()
        await _until(lambda: gateway.store.reading("pole-1", "motion") is not None, "the node's first report", 30)
        assert square.level == 50  # no motion yet
        node.set_hardware(pins={"4": 1})  # someone walks across the square
        await _until(lambda: square.level == 100, "the square raised by the node's motion", 15)
        assert square.last is not None and square.last.reason == "sensor" and "pole-1" in (square.last.detail or "")
        node.set_hardware(pins={"4": 0})
        await _until(lambda: gateway.store.reading("pole-1", "motion").value is False, "the node reporting no motion")  # type: ignore[union-attr]
        await clock.advance(299)
        assert square.level == 100  # still within the hold of 300 s after the last motion
        await clock.advance(30)
        await _until(lambda: square.level == 50, "the square back to the program after the hold")
        assert site.get_value("lamps", "ballast_1_arc_power") == 50
    finally:
        await node.stop()
        await gateway.stop()


async def test_a_photocell_with_hysteresis_keeps_daylight_lamps_off_and_never_flickers(
    site_factory: SiteFactory, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    site = await site_factory(SITE)
    lighting = _lighting()
    lighting["targets"] = [
        {"id": "park", "device": "lamps", "point": "group_0_arc_power",
         "photocell": {"device": "pole-1", "point": "illuminance", "on_below": 20, "off_above": 40}},
    ]  # fmt: skip
    path = _gateway_file(site, mosquitto, tmp_path, lighting=lighting)
    clock = SimulatedClock(at("2026-06-27T22:00"))  # the program says 100 since sunset+10m
    gateway = Gateway(path, clock=clock)
    await gateway.start()
    controller = gateway.lighting
    assert controller is not None
    park = controller.targets["park"]
    try:
        await _until(lambda: park.level == 100, "the program's level without a reading")
        seen = []
        for lux in (30, 60, 35, 25, 39, 15, 35, 21, 45):  # a cloudy dusk around the thresholds
            gateway.bus.publish(DeviceUpdate("pole-1", 0, {"illuminance": lux}, {}, 0.0))
            await _until(lambda: controller.decide(park, clock.now()).level == park.level, f"the level after {lux} lx")
            seen.append(park.level)
        # in the band (20..40 lx) nothing changes; off only above 40, on again only below 20
        assert seen == [100, 0, 0, 0, 0, 100, 100, 100, 0], seen
        assert park.last is not None and park.last.reason == "sensor" and park.last.target_level == 100
    finally:
        await gateway.stop()


async def test_energy_saved_over_a_night_worked_out_by_hand(
    site_factory: SiteFactory, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """Ten 50 W lamps: 100 % from 20:00, 50 % from 22:00, off at 02:00. By hand: 6 burning hours; at full power
    10 x 50 W x 6 h = 3.0 kWh; used 10 x 50 W x (2 h x 100 % + 4 h x 50 %) = 2.0 kWh; saved 1.0 kWh, 33.33 %."""
    site = await site_factory(SITE)
    lighting = _lighting()
    lighting["programs"] = {"night": [{"at": "20:00", "level": 100}, {"at": "22:00", "level": 50},
                                      {"at": "02:00", "level": 0}]}  # fmt: skip
    lighting["targets"] = [{"id": "street", "device": "lamps", "point": "group_0_arc_power"}]
    indicators = {
        "interval": 3600,
        "groups": {"street": {"lamps": 10, "watts": 50}},
        "feeders": {"f1": {"device": "pole-1", "point": "motion_count"}},
    }  # pole-1 stands in for a meter
    path = _gateway_file(site, mosquitto, tmp_path, lighting=lighting, indicators=indicators)  # fmt: skip
    clock = SimulatedClock(at("2026-06-27T19:00"))
    gateway = Gateway(path, clock=clock)
    await gateway.start()
    indicators, controller = gateway.indicators, gateway.lighting
    assert indicators is not None and controller is not None
    street = controller.targets["street"]
    try:
        await _until(lambda: street.level == 0, "off before the evening")
        for moment, level in (("2026-06-27T20:00", 100), ("2026-06-27T22:00", 50), ("2026-06-28T02:00", 0)):
            await clock.run_until(at(moment), step=900)
            await _until(lambda lv=level: street.level == lv, f"{level} % at {moment}")  # type: ignore[misc]
        await clock.run_until(at("2026-06-28T07:00"), step=3600)
        groups = indicators.snapshot()["groups"]["street"]
        assert groups == {"burning_hours": 6.0, "switch_ons": 1, "energy_kwh": 2.0, "full_power_kwh": 3.0,
                          "saved_kwh": 1.0, "saved_percent": 33.33}, groups  # fmt: skip
        # a feeder counter with a reset and a gap: 100.0 -> 100.5 (+0.5), reset to 0.2, -> 0.7 (+0.5), NaN, 1.0 (+0.3)
        for value in (100.0, 100.5, 0.2, 0.7, float("nan"), 1.0):
            gateway.bus.publish(DeviceUpdate("pole-1", 0, {"motion_count": value}, {}, 0.0))
        feeder = indicators.snapshot()["feeders"]["f1"]
        assert feeder == {"metered_kwh": 1.3, "counter_resets": 1, "readings": 5}, feeder
    finally:
        await gateway.stop()
