"""Behaviour models: lamps fade and fail, meters follow load, relays trip, water rises with rain."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from gateway.south.modbus.profile import place
from hil.fixtures import SiteFactory
from hil.site.emulated import Site
from tests.waiting import until


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    await until(check, timeout)


def _site(*devices: dict[str, Any]) -> dict[str, Any]:
    return {"links": [{"id": "net", "type": "modbus-tcp"}], "devices": list(devices)}


LAMPS = {
    "id": "lamps",
    "profile": "dali-modbus-gateway",
    "link": "net",
    "unit": 2,
    "params": {"ballasts": 8, "groups": 2},
    "options": {"initial_level": 100, "fade_time": 2},
}


async def _client(site: Site) -> AsyncModbusTcpClient:
    port = int(site.endpoint_addresses()["net"].rpartition(":")[2])
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
    assert await client.connect()
    return client


async def test_lamp_level_fades_to_the_commanded_arc_power(site_factory: SiteFactory) -> None:
    site = await site_factory(_site(LAMPS))
    arc = site.devices["lamps"].resolved.point("ballast_2_arc_power")
    assert arc is not None
    client = await _client(site)
    try:
        assert not (await client.write_register(place(arc).address, 20, device_id=2)).isError()
    finally:
        client.close()
    # fade time code 2 = 1 s: part way after a moment, at the target once the fade is over
    await eventually(lambda: 20 < site.get_value("lamps", "ballast_2_level") < 100, timeout=1.0)  # type: ignore[operator]
    await eventually(lambda: site.get_value("lamps", "ballast_2_level") == 20, timeout=3.0)
    assert site.get_value("lamps", "ballast_1_level") == 100
    assert site.get_value("lamps", "ballast_2_lamp_on") is True


async def test_group_and_broadcast_dimming(site_factory: SiteFactory) -> None:
    site = await site_factory(_site({**LAMPS, "options": {"fade_time": 0}}))
    group = site.devices["lamps"].resolved.point("group_1_arc_power")
    broadcast = site.devices["lamps"].resolved.point("broadcast_arc_power")
    assert group is not None and broadcast is not None
    client = await _client(site)
    try:
        await client.write_register(place(group).address, 40, device_id=2)
        await eventually(lambda: site.get_value("lamps", "ballast_3_level") == 40)
        assert site.get_value("lamps", "ballast_2_level") == 100  # group 0
        await client.write_register(place(broadcast).address, 0, device_id=2)
        await eventually(lambda: all(site.get_value("lamps", f"ballast_{i}_level") == 0 for i in range(8)))
        assert site.get_value("lamps", "ballast_0_lamp_on") is False
    finally:
        client.close()


async def test_injected_lamp_failure_sets_the_status_bits(site_factory: SiteFactory) -> None:
    site = await site_factory(_site(LAMPS))
    site.stimulus("lamps", "lamp_failure", {"ballast": 3})
    await eventually(lambda: site.get_value("lamps", "ballast_3_lamp_failure") is True)
    assert site.get_value("lamps", "ballast_3_status") == 0b010  # lamp failure, lamp off
    assert site.get_value("lamps", "lamp_failures_0") == 1 << 3
    assert site.get_value("lamps", "ballast_3_level") == 0
    site.stimulus("lamps", "ballast_failure", {"ballast": 5})
    await eventually(lambda: site.get_value("lamps", "ballast_5_ballast_failure") is True)
    site.stimulus("lamps", "repair", {"ballast": 3})
    await eventually(lambda: site.get_value("lamps", "ballast_3_status") == 0b100)
    with pytest.raises(ValueError, match="no ballast 99"):
        site.stimulus("lamps", "lamp_failure", {"ballast": 99})


async def test_meter_values_are_plausible_and_energy_only_grows(site_factory: SiteFactory) -> None:
    site = await site_factory(_site({"id": "m", "profile": "eastron-sdm630", "link": "net", "unit": 1}))
    await asyncio.sleep(0.3)
    readings = []
    for _ in range(5):
        readings.append(
            {p: site.get_value("m", p) for p in ("voltage_l1", "frequency", "power_total", "energy_import")}
        )
        await asyncio.sleep(0.25)
    for r in readings:
        assert 220 < r["voltage_l1"] < 240  # type: ignore[operator]
        assert 49.9 < r["frequency"] < 50.1  # type: ignore[operator]
        assert r["power_total"] > 0  # type: ignore[operator]
    energy = [r["energy_import"] for r in readings]
    assert energy == sorted(energy) and energy[-1] > energy[0]  # type: ignore[operator]
    assert len({r["voltage_l1"] for r in readings}) > 1  # noise


async def test_meter_load_follows_the_lamps(site_factory: SiteFactory) -> None:
    site = await site_factory(
        _site(
            {**LAMPS, "options": {"fade_time": 0}},
            {
                "id": "m",
                "profile": "eastron-sdm630",
                "link": "net",
                "unit": 1,
                "options": {"load_from": "lamps", "watts_per_lamp": 150},
            },
        )
    )
    await asyncio.sleep(0.3)
    lit = site.get_value("m", "power_total")
    assert 8 * 150 * 0.9 < lit < 8 * 150 * 1.2  # type: ignore[operator]
    broadcast = site.devices["lamps"].resolved.point("broadcast_arc_power")
    assert broadcast is not None
    client = await _client(site)
    try:
        await client.write_register(place(broadcast).address, 0, device_id=2)
    finally:
        client.close()
    await eventually(lambda: site.get_value("m", "power_total") < 50)  # type: ignore[operator]


async def test_relay_open_close_and_overcurrent_trip(site_factory: SiteFactory) -> None:
    site = await site_factory(_site({"id": "r", "profile": "feeder-protection-relay", "link": "net", "unit": 1}))
    command = site.devices["r"].resolved.point("breaker_command")
    assert command is not None
    client = await _client(site)
    try:
        await eventually(lambda: site.get_value("r", "current_l1") > 30)  # type: ignore[operator]
        await client.write_register(place(command).address, 1, device_id=1)  # open
        await eventually(lambda: site.get_value("r", "breaker_open") is True)
        assert site.get_value("r", "breaker_closed") is False and site.get_value("r", "current_l1") == 0
        await client.write_register(place(command).address, 2, device_id=1)  # close
        await eventually(lambda: site.get_value("r", "breaker_closed") is True)
        site.stimulus("r", "overcurrent", {})
        await eventually(lambda: site.get_value("r", "tripped") is True)
        assert site.get_value("r", "breaker_open") is True
        assert (
            await client.write_register(place(command).address, 3, device_id=1)
        ).exception_code == 3  # no such command
        await client.write_register(place(command).address, 2, device_id=1)  # closed again: the load flows
        site.stimulus("r", "load", {"amps": 70})
        await eventually(lambda: site.get_value("r", "current_l1") > 68)  # type: ignore[operator]
        assert site.get_value("r", "tripped") is False  # an overload the protection has not tripped on (yet)
        for bad in (float("nan"), float("inf"), -1, 1e9, True, "70", None):
            with pytest.raises(ValueError, match="load: amps must be a number from 0 to 10000"):
                site.stimulus("r", "load", {"amps": bad})
        with pytest.raises(TypeError):
            site.stimulus("r", "load", {"volts": 3})
        assert site.get_value("r", "current_l1") > 68  # a refused stimulus changes nothing  # type: ignore[operator]
    finally:
        client.close()


async def test_water_rises_with_rain_and_totals_only_grow(site_factory: SiteFactory) -> None:
    site = await site_factory(
        _site(
            {
                "id": "w",
                "profile": "water-level-logger",
                "link": "net",
                "unit": 1,
                "options": {"response_s": 1.0, "base_level_m": 0.5},
            },
            {"id": "f", "profile": "magflow-meter", "link": "net", "unit": 2},
        )
    )
    await asyncio.sleep(1.5)
    dry_pressure, dry_flow = site.get_value("w", "pressure"), site.get_value("f", "flow")
    total = site.get_value("f", "total_forward")
    assert 45 < dry_pressure < 55  # type: ignore[operator]  # 0.5 m of water = 49 mbar
    site.stimulus("w", "rain", {"mm_per_h": 40})
    await eventually(lambda: site.get_value("w", "pressure") > dry_pressure + 80)  # type: ignore[operator]
    assert site.get_value("f", "flow") > dry_flow  # type: ignore[operator]
    assert site.get_value("f", "total_forward") > total  # type: ignore[operator]


def test_unknown_behaviour_option_is_refused() -> None:
    import random

    from gateway.profiles.expand import expand
    from gateway.profiles.registry import ProfileRegistry
    from hil.modbus.behaviours import EnergyMeter, Environment
    from hil.modbus.device import EmulatedDevice

    device = EmulatedDevice("m", expand(ProfileRegistry().load("eastron-sdm120")[0])[0], 1)
    with pytest.raises(ValueError, match="unknown option nominal"):
        EnergyMeter(device, {"nominal": 230}, Environment(), random.Random(1))
