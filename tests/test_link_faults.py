"""Hostile devices on shared links, against independent peers: one device's faults stay that device's.

A device whose answers close the shared Modbus TCP connection goes offline on its
own while its neighbour on the same connection keeps its poll rate; a converter
that floods garbage costs bounded memory and never starves another link; answers
that drip in one byte at a time or come after a stale transaction id still count.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config.loader import load_config
from gateway.core.engine import Engine
from gateway.core.events import DeviceUpdate, EventBus, HealthChanged, Notable
from gateway.south.modbus.transport import NOISE_LIMIT
from tests.peers import ModbusPeer, float32
from tests.waiting import until

Start = Callable[..., Awaitable["Run"]]


class Run:
    """An engine polling independent peers, with everything it reported."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.updates: list[tuple[float, DeviceUpdate]] = []
        self.health: list[HealthChanged] = []
        self.notable: list[Notable] = []

    def times(self, device: str) -> list[float]:
        return [t for t, u in self.updates if u.device == device]

    def values(self, device: str) -> dict[str, Any]:
        latest = [u for _, u in self.updates if u.device == device]
        return dict(latest[-1].values) if latest else {}


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    runs: list[Run] = []

    async def make(links: list[dict[str, Any]], devices: list[dict[str, Any]]) -> Run:
        path = tmp_path / f"gw{len(runs)}.yaml"
        for device in devices:
            device.setdefault("report", {"mode": "periodic"})
        data = {"gateway": {"id": "links"}, "links": links, "devices": devices}
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        bus = EventBus()
        run = Run(Engine(bus))
        loop = asyncio.get_running_loop()
        bus.subscribe(DeviceUpdate, lambda u: run.updates.append((loop.time(), u)))
        bus.subscribe(HealthChanged, run.health.append)
        bus.subscribe(Notable, run.notable.append)
        await run.engine.start(load_config(path))
        runs.append(run)
        return run

    yield make
    for run in runs:
        await run.engine.stop()


async def _peer(*, rtu: bool = False, noise: int = 0, **units: str) -> ModbusPeer:
    peer = ModbusPeer(rtu=rtu, noise_per_second=noise)
    for name, mode in units.items():
        unit = peer.unit(int(name.removeprefix("u")), mode)
        unit.set_float32(0x00, float32(230.0 + int(name[1:])))
        unit.set_float32(0x46, float32(50.0))
    await peer.start()
    return peer


def _tcp(link: str, peer: ModbusPeer, rtu: bool = False) -> dict[str, Any]:
    kind = "modbus-rtu-tcp" if rtu else "modbus-tcp"
    return {"id": link, "type": kind, "host": "127.0.0.1", "port": peer.port, "timeout": 0.3}


def _meter(device: str, link: str, unit: int, poll: float = 0.2) -> dict[str, Any]:
    return {"id": device, "profile": "eastron-sdm630", "link": link, "unit": unit, "poll": poll}


def _largest_gap(times: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(times)), default=float("inf"))


async def test_a_device_that_closes_the_shared_connection_does_not_take_the_link_down(start: Start) -> None:
    peer = await _peer(u1="normal", u2="close")
    try:
        run = await start([_tcp("net", peer)], [_meter("good", "net", 1), _meter("bad", "net", 2)])
        await until(lambda: run.engine.devices["bad"].health.state.value == "offline", 15, "the bad device offline")
        mark = len(run.times("good"))
        await asyncio.sleep(4)  # the bad device keeps breaking the connection with its probes meanwhile
        times = run.times("good")[mark:]
        assert len(times) >= 10 and _largest_gap(times) < 1.0, times  # poll 0.2 s, a timeout is 0.3 s
        assert [h.state for h in run.health if h.device == "good"] == ["online"]
        assert not [n for n in run.notable if n.kind == "link_down"]
        assert run.engine.links["net"].stats.state == "up"
        bad = run.engine.devices["bad"].health
        assert bad.reason == "connection_reset" and bad.counters.errors["connection"] >= 3
        assert run.values("good")["voltage_l1"] == 231.0
        assert peer.connections >= 4  # reconnected at once after each drop
    finally:
        await peer.stop()


async def test_a_link_that_refuses_connections_still_backs_off(start: Start) -> None:
    peer = await _peer(u1="normal")
    port = peer.port
    await peer.stop()  # nothing listens there any more: the link itself is down
    run = await start(
        [{"id": "net", "type": "modbus-tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3}],
        [_meter("m", "net", 1)],
    )
    await until(lambda: [n for n in run.notable if n.kind == "link_down"], 10, "link down")
    assert run.engine.links["net"].stats.reason == "connection_refused"


async def test_a_noisy_converter_costs_bounded_memory_and_starves_no_other_link(start: Start) -> None:
    noisy = await _peer(rtu=True, noise=64_000, u1="normal")
    quiet = await _peer(u1="normal")
    try:
        run = await start(
            [_tcp("noisy", noisy, rtu=True), _tcp("quiet", quiet)],
            [_meter("in-noise", "noisy", 1), _meter("elsewhere", "quiet", 1, poll=0.1)],
        )
        transport = run.engine.links["noisy"].transport
        largest = 0
        for _ in range(250):  # five seconds of a noisy line, sampled
            await asyncio.sleep(0.02)
            largest = max(largest, len(transport.buf))
        assert noisy.noise_sent > 200_000
        assert largest <= NOISE_LIMIT  # the old scanner kept every byte: 64 KB more each second
        assert transport.noise_bytes > 100_000  # counted, and shown in the link's health
        assert run.engine.links["noisy"].health()["noise_bytes"] == transport.noise_bytes
        times = run.times("elsewhere")
        assert len(times) >= 30 and _largest_gap(times) < 1.0  # the other link kept its rhythm
        assert run.values("in-noise").get("voltage_l1") == 231.0  # answers are still found amid the noise
    finally:
        await noisy.stop()
        await quiet.stop()


@pytest.mark.parametrize("rtu", [False, True], ids=["tcp", "rtu-tcp"])
async def test_dripping_answers_and_stale_transaction_ids_are_read(start: Start, rtu: bool) -> None:
    peer = await _peer(rtu=rtu, u1="drip", u2="wrong_tid")
    try:
        run = await start([_tcp("net", peer, rtu)], [_meter("drip", "net", 1), _meter("tid", "net", 2)])
        await until(lambda: run.values("drip") and run.values("tid"), 10, "values from both")
        assert run.values("drip")["voltage_l1"] == 231.0 and run.values("tid")["voltage_l1"] == 232.0
        await asyncio.sleep(1)
        assert run.engine.devices["drip"].health.state.value == "online"
        assert run.engine.devices["tid"].health.state.value == "online"
    finally:
        await peer.stop()
