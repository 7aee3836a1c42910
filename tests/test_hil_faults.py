"""Every fault kind of the emulators, observed from the client side (raw bytes where it matters)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from hil.fixtures import SiteFactory
from hil.site.emulated import Site
from tests.modbus_raw import crc_ok, rtu_read, serial_exchange, tcp_exchange, tcp_read

EXCEPTION_CODES = [1, 2, 3, 4, 5, 6, 10, 11]


def _one_device(link: dict[str, Any], **device: Any) -> dict[str, Any]:
    return {
        "links": [link],
        "devices": [
            {
                "id": "dut",
                "profile": "water-level-logger",
                "link": link["id"],
                "unit": 7,
                "behaviour": "static",
                **device,
            }
        ],
    }


TCP = {"id": "net", "type": "modbus-tcp"}
RTU_TCP = {"id": "net", "type": "modbus-rtu-tcp"}
PTY = {"id": "bus", "type": "modbus-rtu", "baudrate": 115200, "wire_timing": False}


def _port(site: Site) -> int:
    return int(site.endpoint_addresses()["net"].rpartition(":")[2])


async def _client(site: Site, timeout: float = 0.5) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient("127.0.0.1", port=_port(site), timeout=timeout, retries=0)
    assert await client.connect()
    return client


async def test_timeout_fault_means_no_answer(site_factory: SiteFactory) -> None:
    site = await site_factory(_one_device(TCP, faults={"timeout": True}))
    assert await tcp_exchange(_port(site), tcp_read(7, 4, 0, 1), wait=0.4) == b""
    site.set_fault("dut", {"timeout": False})
    answer = await tcp_exchange(_port(site), tcp_read(7, 4, 0, 1))
    assert answer[7] == 4 and len(answer) == 11  # MBAP + fc + byte count + one register


@pytest.mark.parametrize("code", EXCEPTION_CODES)
async def test_exception_codes(code: int, site_factory: SiteFactory) -> None:
    site = await site_factory(_one_device(TCP, faults={"exception": code}))
    client = await _client(site)
    try:
        response = await client.read_input_registers(0, count=1, device_id=7)
        assert response.isError()
        assert response.exception_code == code
    finally:
        client.close()


async def test_slow_answers(site_factory: SiteFactory) -> None:
    site = await site_factory(_one_device(TCP))
    client = await _client(site, timeout=2)
    try:
        start = time.monotonic()
        await client.read_input_registers(0, count=1, device_id=7)
        fast = time.monotonic() - start
        site.set_fault("dut", {"delay": 0.3})
        start = time.monotonic()
        response = await client.read_input_registers(0, count=1, device_id=7)
        slow = time.monotonic() - start
        assert not response.isError()
        assert slow >= 0.3 > fast
    finally:
        client.close()


async def test_corrupt_crc_on_rtu(site_factory: SiteFactory) -> None:
    site = await site_factory(_one_device(PTY))
    path = site.endpoint_addresses()["bus"]
    good = await asyncio.to_thread(serial_exchange, path, rtu_read(7, 4, 0, 1), 0.5, 115200)
    assert crc_ok(good) and good[:3] == bytes([7, 4, 2])
    site.set_fault("dut", {"corrupt": True})
    bad = await asyncio.to_thread(serial_exchange, path, rtu_read(7, 4, 0, 1), 0.5, 115200)
    assert len(bad) == len(good) and bad[:-2] == good[:-2]
    assert not crc_ok(bad)


async def test_corrupt_frame_on_tcp_breaks_mbap_length(site_factory: SiteFactory) -> None:
    site = await site_factory(_one_device(TCP, faults={"corrupt": True}))
    answer = await tcp_exchange(_port(site), tcp_read(7, 4, 0, 1))
    assert int.from_bytes(answer[4:6], "big") != len(answer) - 6


async def test_garbage_before_the_answer(site_factory: SiteFactory) -> None:
    site = await site_factory(_one_device(RTU_TCP, faults={"garbage": 5}))
    answer = await tcp_exchange(_port(site), rtu_read(7, 4, 0, 1))
    frame = answer[5:]
    assert len(answer) == 5 + 7 and crc_ok(frame) and frame[0] == 7


async def test_wrong_unit_id(site_factory: SiteFactory) -> None:
    site = await site_factory(_one_device(RTU_TCP, faults={"wrong_unit": True}))
    answer = await tcp_exchange(_port(site), rtu_read(7, 4, 0, 1))
    assert crc_ok(answer) and answer[0] != 7  # a valid frame, from the wrong unit


async def test_dropped_connections(site_factory: SiteFactory) -> None:
    site = await site_factory(_one_device(TCP))
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(site))
    try:
        writer.write(tcp_read(7, 4, 0, 1))
        assert len(await asyncio.wait_for(reader.read(100), 2)) == 11
        assert site.drop("net") == 1
        assert await asyncio.wait_for(reader.read(100), 2) == b""  # the peer closed
    finally:
        writer.close()


async def test_refused_connections_and_recovery(site_factory: SiteFactory) -> None:
    site = await site_factory(_one_device(TCP))
    port = _port(site)
    await site.refuse("net", True)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    await site.refuse("net", False)
    answer = await tcp_exchange(port, tcp_read(7, 4, 0, 1))
    assert len(answer) == 11


async def test_reboot_resets_registers_and_goes_silent(site_factory: SiteFactory) -> None:
    site = await site_factory(_one_device(TCP))
    client = await _client(site, timeout=0.3)
    try:
        assert not (await client.write_register(1, 0, device_id=7)).isError()  # mode: logging
        assert (await client.read_holding_registers(1, count=1, device_id=7)).registers == [0]
        await site.reboot("dut", downtime=0.6)
    finally:
        client.close()
    assert await tcp_exchange(_port(site), tcp_read(7, 3, 1, 1), wait=0.3) == b""  # booting: silent
    await asyncio.sleep(0.6)
    answer = await tcp_exchange(_port(site), tcp_read(7, 3, 1, 1))
    assert answer[-2:] == (1).to_bytes(2, "big")  # back to the power-on value: realtime
    assert site.devices["dut"].stats.reboots == 1


async def test_noise_on_a_serial_line(site_factory: SiteFactory) -> None:
    site = await site_factory(_one_device(PTY))
    path = site.endpoint_addresses()["bus"]

    def listen() -> bytes:
        import serial

        with serial.Serial(path, 115200, timeout=1) as port:
            port.reset_input_buffer()
            site_loop.call_soon_threadsafe(site.noise, "bus", 12)
            return bytes(port.read(12))

    site_loop = asyncio.get_running_loop()
    assert len(await asyncio.to_thread(listen)) == 12
    assert site.endpoints["bus"].line.stats.noise == 12  # type: ignore[attr-defined]


async def test_device_limits_forbidden_ranges_and_split_reads(site_factory: SiteFactory) -> None:
    site = await site_factory(
        {
            "links": [TCP],
            "devices": [{"id": "dut", "profile": "eastron-sdm630", "link": "net", "unit": 1, "behaviour": "static"}],
        }
    )
    client = await _client(site)
    try:
        assert (await client.read_input_registers(0, count=81, device_id=1)).exception_code == 3  # max 80
        assert not (await client.read_input_registers(0, count=80, device_id=1)).isError()
        assert (await client.read_input_registers(0x157, count=2, device_id=1)).exception_code == 2  # past the map
        site.set_fault("dut", {"split_reads": 10})
        assert (await client.read_input_registers(0, count=12, device_id=1)).exception_code == 2
        assert not (await client.read_input_registers(0, count=10, device_id=1)).isError()
    finally:
        client.close()


async def test_writes_are_checked_like_a_device(site_factory: SiteFactory) -> None:
    site = await site_factory(_one_device(TCP))
    client = await _client(site)
    try:
        assert (await client.write_register(0, 300, device_id=7)).exception_code == 3  # slave address 1..247
        assert (await client.write_register(0, 12, device_id=7)).isError() is False
        assert site.get_value("dut", "slave_address") == 12
        assert (await client.write_register(9, 1, device_id=7)).exception_code == 2  # nothing there
    finally:
        client.close()


def test_fault_values_are_parsed_strictly() -> None:
    from hil.modbus.device import DeviceFaults

    faults = DeviceFaults()
    faults.update({"timeout": "on", "delay": "0.2", "exception": "0x0B"})
    assert faults.active() == {"timeout": True, "delay": 0.2, "exception": 11}
    for bad in ({"timeout": "maybe"}, {"exception": 7}, {"delay": -1}, {"nope": 1}):
        with pytest.raises(ValueError):
            faults.update(bad)
    assert faults.active() == {"timeout": True, "delay": 0.2, "exception": 11}  # unchanged by failed updates
