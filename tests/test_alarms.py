"""Alarms with a lifecycle: thresholds with hysteresis and delay (no flapping on a noisy value), states, a device
offline for a time; raised, acknowledged over MQTT, cleared, shelved; the retained list after a restart, with
nothing announced again. Against an emulated site through the whole gateway on a real mosquitto."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from gateway.app import Gateway
from gateway.core.events import DeviceUpdate, EventBus
from gateway.edge.alarms.manager import AlarmCleared, AlarmManager, AlarmRaised
from gateway.edge.alarms.rules import AlarmRule
from gateway.edge.clock import SimulatedClock
from hil.broker import MosquittoBroker
from hil.fixtures import SiteFactory
from hil.site.scenario import gateway_config
from tests.mqtt_harness import Watcher
from tests.test_config_hostile import HEADER, _bounded_check
from tests.waiting import until

START = datetime(2026, 6, 28, 1, 0, tzinfo=ZoneInfo("Europe/Madrid"))


async def _until(check: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    await until(check, timeout, what)


def _manager(tmp_path: Path, *rules: AlarmRule) -> tuple[AlarmManager, EventBus, SimulatedClock, list[object]]:
    bus, clock = EventBus(), SimulatedClock(START)
    seen: list[object] = []
    bus.subscribe(AlarmRaised, seen.append)
    bus.subscribe(AlarmCleared, seen.append)
    manager = AlarmManager(list(rules), bus, clock, tmp_path / "alarms.json")
    manager.start()
    return manager, bus, clock, seen


async def test_a_noisy_level_around_its_threshold_raises_once_and_clears_once(tmp_path: Path) -> None:
    rule = AlarmRule(id="river-high", device="river", point="level", above=2.5, hysteresis=0.1, delay=30)
    manager, bus, clock, seen = _manager(tmp_path, rule)

    def level(value: float) -> None:
        bus.publish(DeviceUpdate("river", 0, {"level": value}, {}, 0.0))
        manager.tick()

    for value in (2.4, 2.51, 2.49, 2.52):  # above, not for 30 s yet: nothing
        level(value)
        await clock.advance(10)
    assert seen == []
    level(2.55)
    for _ in range(4):  # above for 40 s without a dip below the threshold: raised, once
        await clock.advance(10)
        level(2.56)
    assert [type(e).__name__ for e in seen] == ["AlarmRaised"]
    for value in (2.45, 2.55, 2.42, 2.58, 2.41):  # wandering inside the hysteresis band (2.4 .. 2.5): stays raised
        level(value)
    assert len(seen) == 1 and manager.alarms["river-high"].active
    level(2.39)  # back below 2.5 - 0.1: cleared
    level(2.45)
    assert [type(e).__name__ for e in seen] == ["AlarmRaised", "AlarmCleared"]
    assert manager.alarms["river-high"].active is False  # cleared, not acknowledged: still listed
    await manager.acknowledge({"alarm": "river-high", "by": "ana"})
    assert manager.list() == []


async def test_hostile_values_never_raise_or_clear(tmp_path: Path) -> None:
    rule = AlarmRule(id="hot", device="d", point="t", above=50)
    manager, bus, _, seen = _manager(tmp_path, rule)
    for value in (float("nan"), float("inf"), "hot", True, None, [1]):
        bus.publish(DeviceUpdate("d", 0, {"t": value}, {}, 0.0))  # type: ignore[dict-item]
    assert seen == [] and manager.list() == []
    bus.publish(DeviceUpdate("d", 0, {"t": 51}, {}, 0.0))
    bus.publish(DeviceUpdate("d", 0, {"t": float("nan")}, {}, 0.0))  # says nothing: the alarm stays
    assert len(seen) == 1 and manager.alarms["hot"].active


def _site_config(
    site: Any, mosquitto: MosquittoBroker, tmp_path: Path, alarms: list[dict[str, Any]], shipped: bool = False
) -> Path:
    data = gateway_config(site.loaded, site.endpoint_addresses())
    for device in data["devices"]:
        device["alarms"] = shipped  # the profiles' own alarms: only where a test is about them
    data["gateway"] = {"id": "block", "health_interval": 1}
    data["mqtt"] = {"host": mosquitto.host, "port": mosquitto.port, "keepalive": 5}
    data["store"] = {"path": str(tmp_path / "outbox.db")}
    data["alarms"] = alarms
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


SITE: dict[str, Any] = {
    "links": [{"id": "net", "type": "modbus-tcp"}],
    "devices": [
        {"id": "lamps", "profile": "dali-modbus-gateway", "link": "net", "unit": 2,
         "params": {"ballasts": 4, "groups": 2}, "poll": 0.3, "options": {"fade_time": 0}},
        {"id": "meter", "profile": "eastron-sdm630", "link": "net", "unit": 1, "poll": 0.3},
    ],
}  # fmt: skip
ALARMS = [
    {"id": "lamp-3", "device": "lamps", "point": "ballast_3_lamp_failure", "equals": True, "severity": "minor"},
    {"id": "meter-silent", "device": "meter", "offline_for": 60, "severity": "major"},
]


async def test_each_lifecycle_step_over_mqtt_and_a_restart_without_a_storm(
    site_factory: SiteFactory, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    site = await site_factory(SITE)
    path = _site_config(site, mosquitto, tmp_path, ALARMS)
    base = "cityedge/block"
    w = Watcher(mosquitto)
    await w.start()
    clock = SimulatedClock(START)
    gateway = Gateway(path, clock=clock)
    await gateway.start()
    try:
        empty = await w.wait_for(lambda s: s.topic == f"{base}/alarms", what="the empty list")
        assert empty.json() == []
        # a lamp fails: a status bit, raised at once, on the event topic and in the retained list
        site.stimulus("lamps", "lamp_failure", {"ballast": 3})
        raised = await w.wait_for(lambda s: s.topic == f"{base}/event" and s.json().get("kind") == "alarm_raised")
        assert raised.json()["alarm"] == "lamp-3" and raised.json()["severity"] == "minor"
        listed = await w.wait_for(lambda s: s.topic == f"{base}/alarms" and len(s.json()) == 1)
        assert listed.json()[0]["id"] == "lamp-3" and listed.json()[0]["active"] is True
        # acknowledged over MQTT: by whom and when
        answer = await w.request(base, "ack", {"alarm": "lamp-3", "by": "ana"})
        assert answer["status"] == "ok" and answer["data"]["acked_by"] == "ana", answer
        refused = await w.request(base, "ack", {"alarm": "nope", "by": "ana"})
        assert refused["error"]["code"] == "unknown_alarm"
        refused = await w.request(base, "ack", {"alarm": "lamp-3"})
        assert refused["error"]["code"] == "bad_value"
        # the meter goes silent: offline at once for the gateway, an alarm only after 60 s of the clock
        since = len(w.seen)
        site.set_fault("meter", {"timeout": True})
        await w.wait_for(lambda s: s.topic == f"{base}/event" and s.json().get("kind") == "device_offline", since=since,
                         timeout=20)  # fmt: skip
        assert "meter-silent" not in gateway.alarms.alarms  # type: ignore[union-attr]
        await clock.advance(61)
        await _until(lambda: "meter-silent" in gateway.alarms.alarms, "the offline alarm")  # type: ignore[union-attr]
        # shelved: tracked, not announced
        shelved = await w.request(base, "shelve", {"alarm": "meter-silent", "by": "ops", "duration": 3600})
        assert shelved["status"] == "ok" and "shelved_until" in shelved["data"]
    finally:
        await gateway.stop()
    kept = (tmp_path / "alarms.json").read_text()
    assert "lamp-3" in kept and "meter-silent" in kept
    # a restart: the list is back as it was, and nothing is announced again
    since = len(w.seen)
    gateway = Gateway(path, clock=clock)
    await gateway.start()
    try:
        again = await w.wait_for(lambda s: s.topic == f"{base}/alarms" and len(s.json()) == 2, since=since)
        assert {a["id"] for a in again.json()} == {"lamp-3", "meter-silent"}
        await asyncio.sleep(1.0)
        storm = [s for s in w.seen[since:] if s.topic == f"{base}/event" and s.json().get("kind") == "alarm_raised"]
        assert storm == []
        # the meter answers again: its alarm clears (shelved: not announced) and, not acknowledged, stays listed
        site.clear_faults("meter")
        await _until(lambda: not gateway.alarms.alarms["meter-silent"].active, "the offline alarm cleared", 20)  # type: ignore[union-attr]
    finally:
        await gateway.stop()
        await w.stop()


HOSTILE = [
    ("{id: a, device: meter, point: voltage_l1, above: .nan}", "alarms[0].above: must be a finite number"),
    ("{id: a, device: meter, point: voltage_l1, above: 1, below: 2}", "exactly one of: above, below, equals"),
    ("{id: a, device: meter, above: 1}", "give 'point'"),
    ("{id: a, device: metre, point: voltage_l1, above: 1}", "unknown device or node 'metre'"),
    ("{id: a, device: meter, point: voltage_1, above: 1}", "meter has no point 'voltage_1'"),
    ("{id: a, device: meter, offline_for: 0}", "offline_for: must be between 1s and"),
    ("{id: a, device: meter, point: voltage_l1, above: 1, severity: apocalyptic}", "severity: must be 'critical'"),
    ("{id: a, device: meter, point: voltage_l1, above: 1, during: ['25:00', '05:00']}", "during[0]: invalid value"),
    ("{id: a, device: meter, point: voltage_l1, above: 1, during: ['01:00', '05:00'], timezone: Mars/Base}",
     "unknown time zone 'Mars/Base'"),
    ("{id: a, device: meter, point: voltage_l1, above: 1, hysteresis: -1}",
     "hysteresis: must be greater than or equal to 0"),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "says"), HOSTILE, ids=[r[:40] for r, _ in HOSTILE])
def test_hostile_alarm_rules_are_refused_at_their_line(rule: str, says: str, tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        HEADER + "links:\n  - {id: net, type: modbus-tcp, host: 127.0.0.1}\n"
        "devices:\n  - {id: meter, profile: eastron-sdm630, link: net, unit: 1}\n"
        f"alarms:\n  - {rule}\n"
    )
    code, out = _bounded_check(path)
    assert code == 2 and says in out and f"{path}:7:" in out and "Traceback" not in out, out


async def test_a_day_burner_and_a_lamp_drawing_the_wrong_power(tmp_path: Path) -> None:
    from gateway.edge.lighting.controller import LightingChanged

    burner = AlarmRule(id="burner", device="lamps", point="ballast_3_level", day_burner="street")
    power = AlarmRule(id="power", device="lamps", point="ballast_3_power",
                      power={"target": "street", "watts": 50, "tolerance": 0.2})  # type: ignore[arg-type]  # fmt: skip
    manager, bus, _, seen = _manager(tmp_path, burner, power)

    def lamp(level: float, watts: float) -> None:
        bus.publish(DeviceUpdate("lamps", 0, {"ballast_3_level": level, "ballast_3_power": watts}, {}, 0.0))

    lamp(80, 40)  # no lighting level known yet: says nothing
    assert seen == []
    bus.publish(LightingChanged("street", 0.0, "program"))
    lamp(0, 0)
    assert seen == []
    lamp(80, 40)  # the program says off, the lamp burns: a day burner; and 40 W where 0 W is expected
    assert sorted(e.alarm for e in seen if isinstance(e, AlarmRaised)) == ["burner", "power"]
    bus.publish(LightingChanged("street", 50.0, "program"))
    lamp(50, 24)  # at 50 %: 25 W expected, 24 W is within 20 % of 50 W
    cleared = {e.alarm for e in seen if isinstance(e, AlarmCleared)}
    assert cleared == {"burner", "power"}
    lamp(50, 5)  # a failing lamp draws too little
    assert [e.alarm for e in seen if isinstance(e, AlarmRaised)].count("power") == 2
    assert manager.alarms["power"].active and manager.alarms["power"].value == 5


async def test_profiles_ship_alarms_every_device_of_their_model_gets(
    site_factory: SiteFactory, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    site = await site_factory(SITE)
    path = _site_config(site, mosquitto, tmp_path, [], shipped=True)
    gateway = Gateway(path, clock=SimulatedClock(START))
    assert gateway.alarms is not None
    ids = sorted(w.rule.id for w in gateway.alarms.watches.values())
    lamps = [f"lamps.lamp-failure.ballast_{i}_lamp_failure" for i in range(4)]
    supply = [f"meter.supply-loss.voltage_l{i}" for i in (1, 2, 3)]
    assert ids == lamps + supply
    severities = {w.rule.id: w.rule.severity for w in gateway.alarms.watches.values()}
    assert {severities[i] for i in lamps} == {"minor"} and {severities[i] for i in supply} == {"critical"}
    await gateway.start()
    try:
        site.stimulus("lamps", "lamp_failure", {"ballast": 2})
        await _until(lambda: "lamps.lamp-failure.ballast_2_lamp_failure" in gateway.alarms.alarms, "the shipped alarm")  # type: ignore[union-attr]
    finally:
        await gateway.stop()
    data = yaml.safe_load(path.read_text())
    for device in data["devices"]:
        device["alarms"] = False  # this cabinet does without the shipped ones
    path.write_text(yaml.safe_dump(data))
    assert Gateway(path).alarms is None


async def test_a_leak_is_flow_at_night_when_nobody_draws_water(tmp_path: Path) -> None:
    leak = AlarmRule(id="leak", device="outfall", point="flow", above=0.5, delay=600, during=("01:00", "05:00"),
                     timezone="Europe/Madrid", severity="major")  # fmt: skip
    manager, bus, clock, seen = _manager(tmp_path, leak)  # the clock starts at 01:00 Madrid time

    def flow(value: float) -> None:
        bus.publish(DeviceUpdate("outfall", 0, {"flow": value}, {}, 0.0))
        manager.tick()

    for _ in range(12):  # 2 m3/h for an hour, every five minutes, in the night window: a leak after 10 min
        flow(2.0)
        await clock.advance(300)
    assert [e.alarm for e in seen if isinstance(e, AlarmRaised)] == ["leak"]
    await clock.advance(3 * 3600)  # 05:00: the window closes, morning demand is expected
    flow(2.0)
    assert [type(e).__name__ for e in seen] == ["AlarmRaised", "AlarmCleared"]
    for _ in range(12):  # daytime flow raises nothing
        flow(3.0)
        await clock.advance(300)
    assert len(seen) == 2
    assert leak.in_window(datetime(2026, 6, 28, 23, 30, tzinfo=ZoneInfo("Europe/Madrid"))) is False
    night = AlarmRule(id="n", device="d", point="p", above=1, during=("23:00", "05:00"))
    assert night.in_window(datetime(2026, 6, 28, 23, 30, tzinfo=ZoneInfo("UTC")))
    assert night.in_window(datetime(2026, 6, 28, 4, 59, tzinfo=ZoneInfo("UTC")))
    assert not night.in_window(datetime(2026, 6, 28, 5, 0, tzinfo=ZoneInfo("UTC")))


async def test_a_feeder_losing_a_phase_raises_the_meters_shipped_supply_loss_alarm(
    site_factory: SiteFactory, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """The emulated SDM630 loses L2: its profile's supply-loss alarm is raised for that phase alone, critical,
    acknowledged, and cleared (and gone from the list) when the supply is back."""
    site = await site_factory(SITE)
    path = _site_config(site, mosquitto, tmp_path, [], shipped=True)
    gateway = Gateway(path, clock=SimulatedClock(START))
    await gateway.start()
    alarms = gateway.alarms
    assert alarms is not None
    try:
        await _until(lambda: gateway.store.reading("meter", "voltage_l2") is not None, "the meter's first poll")
        assert alarms.list() == []  # 230 V on every phase
        site.stimulus("meter", "supply_loss", {"phase": "l2"})
        await _until(lambda: "meter.supply-loss.voltage_l2" in alarms.alarms, "the supply loss on L2")
        lost = alarms.alarms["meter.supply-loss.voltage_l2"]
        assert lost.severity == "critical" and lost.value == 0 and lost.message == "a phase lost its supply"
        assert [a["id"] for a in alarms.list()] == ["meter.supply-loss.voltage_l2"]  # L1 and L3 still have theirs
        await alarms.acknowledge({"alarm": "meter.supply-loss.voltage_l2", "by": "ana"})
        site.stimulus("meter", "supply_restored", {})
        await _until(lambda: alarms.list() == [], "the supply back: cleared and, acknowledged, gone")
    finally:
        await gateway.stop()


FEEDER_AND_RIVER: dict[str, Any] = {
    "links": [{"id": "net", "type": "modbus-tcp"}],
    "devices": [
        {"id": "relay", "profile": "feeder-protection-relay", "link": "net", "unit": 3, "poll": 0.3},
        {"id": "river", "profile": "water-level-logger", "link": "net", "unit": 4, "poll": 0.3,
         "options": {"response_s": 0.5}},
    ],
}  # fmt: skip
FEEDER_AND_RIVER_ALARMS = [  # the level logger reads pressure: 1 m of water is 98.07 mbar above the sensor
    {"id": "overcurrent", "device": "relay", "point": "current_l1", "above": 63, "hysteresis": 3, "delay": 10,
     "severity": "major"},
    {"id": "river-high", "device": "river", "point": "pressure", "above": 120, "hysteresis": 2, "delay": 30,
     "severity": "major", "message": "river above 1.2 m"},
    {"id": "river-flood", "device": "river", "point": "pressure", "above": 150, "hysteresis": 2, "delay": 30,
     "severity": "critical", "message": "flood level: river above 1.5 m"},
]  # fmt: skip


async def test_overcurrent_a_tripped_breaker_and_high_and_flood_water_each_raised_acknowledged_and_cleared(
    site_factory: SiteFactory, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """The substation's and the river's alarms against the emulated relay and level logger: an overload held for
    its delay, the breaker the protection opened (the relay profile's own alarm) closed again by
    select-before-operate over MQTT, rain raising the river past high and then flood level and falling back."""
    site = await site_factory(FEEDER_AND_RIVER)
    path = _site_config(site, mosquitto, tmp_path, FEEDER_AND_RIVER_ALARMS, shipped=True)
    clock = SimulatedClock(START)
    gateway = Gateway(path, clock=clock)
    w = Watcher(mosquitto)
    await w.start()
    await gateway.start()
    alarms = gateway.alarms
    assert alarms is not None
    store = gateway.store

    def reading(device: str, point: str) -> Any:
        value = store.reading(device, point)
        return None if value is None else value.value

    def listed() -> list[str]:
        return [a["id"] for a in alarms.list()]

    try:
        await _until(lambda: reading("relay", "current_l1") and reading("river", "pressure"), "the first polls")
        assert listed() == []
        # an overload: above 63 A, but an alarm only once it has lasted 10 s
        site.stimulus("relay", "load", {"amps": 70})
        await _until(lambda: (reading("relay", "current_l1") or 0) > 66, "the overload on L1")
        assert listed() == []
        await clock.advance(11)
        await _until(lambda: listed() == ["overcurrent"], "the overcurrent alarm")
        assert alarms.alarms["overcurrent"].severity == "major" and alarms.alarms["overcurrent"].value > 63
        acked = await alarms.acknowledge({"alarm": "overcurrent", "by": "ana"})
        assert acked["acked_by"] == "ana" and acked["active"] is True
        site.stimulus("relay", "load", {"amps": 61.5})  # under 63, not under 60: held by the hysteresis
        await _until(lambda: (reading("relay", "current_l1") or 99) < 62.5, "the load eased")
        assert alarms.alarms["overcurrent"].active
        site.stimulus("relay", "load", {"amps": 40})
        await _until(lambda: listed() == [], "the overload over: cleared and, acknowledged, gone")
        # the protection trips: the relay profile's shipped alarm, at once
        site.stimulus("relay", "overcurrent", {})
        await _until(lambda: listed() == ["relay.breaker-tripped"], "the tripped breaker")
        tripped = alarms.alarms["relay.breaker-tripped"]
        assert tripped.severity == "critical" and tripped.message == "the feeder breaker tripped"
        await alarms.acknowledge({"alarm": "relay.breaker-tripped", "by": "ops"})
        base = "cityedge/block"
        selected = await w.command(base, "relay", {"select": {"breaker_command": "close"}})
        assert selected["status"] == "ok", selected
        closed = await w.command(base, "relay", {"values": {"breaker_command": "close"}, "token": selected["token"]})
        assert closed["status"] == "ok", closed
        await _until(lambda: listed() == [], "the breaker closed again: cleared and gone")
        # rain: the river passes high (1.2 m) and flood (1.5 m) level; both after their 30 s
        site.stimulus("river", "rain", {"mm_per_h": 40})  # 0.8 m + 1.2 m
        await _until(lambda: (reading("river", "pressure") or 0) > 160, "the river rising")
        assert listed() == []
        await clock.advance(31)
        await _until(lambda: sorted(listed()) == ["river-flood", "river-high"], "high and flood water")
        assert alarms.alarms["river-flood"].severity == "critical"
        await alarms.acknowledge({"alarm": "river-high", "by": "ana"})
        site.stimulus("river", "rain", {"mm_per_h": 0})
        await _until(lambda: (reading("river", "pressure") or 999) < 100, "the river back to 0.8 m")
        await _until(lambda: listed() == ["river-flood"], "both cleared, the unacknowledged one still listed")
        assert alarms.alarms["river-flood"].active is False and alarms.alarms["river-flood"].cleared
        await alarms.acknowledge({"alarm": "river-flood", "by": "ana"})
        assert listed() == []
    finally:
        await gateway.stop()
        await w.stop()
