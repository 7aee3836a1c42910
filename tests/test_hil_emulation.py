"""Emulated devices read by an independent pymodbus client: every shipped profile, over TCP and a pty."""

from __future__ import annotations

from typing import Any

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from gateway.points.types import DataType, Value
from gateway.profiles.expand import PointSpec, expand
from gateway.profiles.registry import ProfileRegistry
from gateway.south.modbus.profile import Table, place
from hil.fixtures import SiteFactory

MODBUS_PROFILES = [n for n in ProfileRegistry().names() if ProfileRegistry().load(n)[0].protocol == "modbus"]
PARAMS = {"dali-modbus-gateway": {"ballasts": 4, "groups": 2}}


def sample_value(p: PointSpec, index: int) -> Value | None:
    """A distinct, representable value for every readable point that owns its registers."""
    if p.dtype in (DataType.BIT, DataType.BITFIELD):
        return None  # bit views share a status register; checked through device.get below
    if p.dtype is DataType.BOOL:
        return index % 2 == 0
    if p.dtype is DataType.ENUM:
        assert p.enum
        return list(p.enum.values())[index % len(p.enum)]
    if p.dtype is DataType.STRING:
        codec = place(p).codec
        return f"CE{index}"[: codec.length if codec else 4]
    low = p.min if p.min is not None else 0
    high = p.max if p.max is not None else 1000
    value = low + (index * 7) % max(1, int(high - low))
    if p.dtype in (DataType.FLOAT32, DataType.FLOAT64):
        return value + 0.25
    codec = place(p).codec
    if codec is not None and codec.scale != 1:  # a whole number of raw steps
        return round(int(value) * codec.scale + codec.offset, codec.decimals or 9)
    return int(value)


def _scenario(profile: str, link: dict[str, Any]) -> dict[str, Any]:
    return {
        "links": [link],
        "devices": [
            {
                "id": "dut",
                "profile": profile,
                "link": link["id"],
                "unit": 5,
                "behaviour": "static",
                "params": PARAMS.get(profile, {}),
            }
        ],
    }


async def _read_point(client: Any, point: PointSpec, unit: int) -> Value:
    p = place(point)
    call = {
        Table.COIL: client.read_coils,
        Table.DISCRETE: client.read_discrete_inputs,
        Table.HOLDING: client.read_holding_registers,
        Table.INPUT: client.read_input_registers,
    }[p.table]
    response = await call(p.address, count=p.registers, device_id=unit)
    assert not response.isError(), f"{point.name}: {response}"
    if p.table.is_bits:
        return bool(response.bits[0])
    assert p.codec is not None
    return p.codec.decode_registers(response.registers)


async def _check_profile(site_device: Any, client: Any) -> int:
    expected: dict[str, Value] = {}
    for index, p in enumerate(site_device.resolved.points):
        value = sample_value(p, index)
        if value is not None:
            site_device.set(p.name, value)
            expected[p.name] = value
    checked = 0
    for p in site_device.resolved.points:
        if not p.access.readable:
            continue
        got = await _read_point(client, p, 5)
        want = expected.get(p.name, site_device.get(p.name))
        assert got == pytest.approx(want), f"{p.name}: read {got!r}, device holds {want!r}"
        checked += 1
    return checked


@pytest.mark.parametrize("profile", MODBUS_PROFILES)
async def test_every_profile_reads_back_over_tcp(profile: str, site_factory: SiteFactory) -> None:
    site = await site_factory(_scenario(profile, {"id": "net", "type": "modbus-tcp"}))
    port = int(site.endpoint_addresses()["net"].rpartition(":")[2])
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    assert await client.connect()
    try:
        assert await _check_profile(site.devices["dut"], client) > 0
    finally:
        client.close()


@pytest.mark.parametrize("profile", MODBUS_PROFILES)
async def test_every_profile_reads_back_over_a_pty(profile: str, site_factory: SiteFactory) -> None:
    site = await site_factory(
        _scenario(profile, {"id": "bus", "type": "modbus-rtu", "baudrate": 115200, "wire_timing": False})
    )
    path = site.endpoint_addresses()["bus"]
    assert path.startswith("/dev/pts/")
    client = AsyncModbusSerialClient(path, baudrate=115200, timeout=2, retries=0)
    assert await client.connect()
    try:
        assert await _check_profile(site.devices["dut"], client) > 0
    finally:
        client.close()


async def test_several_units_on_one_line_and_silence_for_the_rest(site_factory: SiteFactory) -> None:
    site = await site_factory(
        {
            "links": [{"id": "bus", "type": "modbus-rtu", "baudrate": 115200, "wire_timing": False}],
            "devices": [
                {
                    "id": "a",
                    "profile": "eastron-sdm120",
                    "link": "bus",
                    "unit": 1,
                    "behaviour": "static",
                    "values": {"voltage": 231.0},
                },
                {
                    "id": "b",
                    "profile": "eastron-sdm120",
                    "link": "bus",
                    "unit": 2,
                    "behaviour": "static",
                    "values": {"voltage": 229.5},
                },
            ],
        }
    )
    client = AsyncModbusSerialClient(site.endpoint_addresses()["bus"], baudrate=115200, timeout=0.3, retries=0)
    assert await client.connect()
    voltage = site.devices["a"].resolved.point("voltage")
    assert voltage is not None
    codec = place(voltage).codec
    assert codec is not None
    try:
        for unit, want in ((1, 231.0), (2, 229.5)):
            response = await client.read_input_registers(0, count=2, device_id=unit)
            assert codec.decode_registers(response.registers) == want
        with pytest.raises(Exception, match="No response"):
            await client.read_input_registers(0, count=2, device_id=3)
    finally:
        client.close()


def test_sdm630_voltage_on_the_wire_is_ieee754_high_word_first() -> None:
    """Golden check independent of the codec: 230.0 V is 0x4366 0x0000."""
    from hil.modbus.device import EmulatedDevice

    resolved, _ = expand(ProfileRegistry().load("eastron-sdm630")[0])
    device = EmulatedDevice("m", resolved, 1)
    device.set("voltage_l1", 230.0)
    assert device.read(Table.INPUT, 0, 2) == [0x4366, 0x0000]
