"""An emulated site: every link and device of a scenario, running, with run-time control.

`Site` is what pytest fixtures, `cityedge hil serve` and `cityedge hil run` drive:
start it, read its endpoints, change faults, reboot devices, drop connections,
inject stimuli, and stop it, leaving no pty or port behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gateway.points.types import Value
from hil.esp32.node import NodeEmulator
from hil.meters import LINE_TYPES, MeterLine, make_meter, stats_of
from hil.modbus.behaviours import BEHAVIOURS, Behaviour, Environment
from hil.modbus.device import EmulatedDevice
from hil.modbus.endpoints import SerialEndpoint, TcpEndpoint
from hil.site.scenario import EmuMeterLink, EmuRtuLink, EmuTcpLink, LoadedScenario, Step

log = logging.getLogger("cityedge.hil")
TICK = 0.1  # seconds between behaviour updates


class Endpoint(Protocol):
    @property
    def address(self) -> str: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def drop_connections(self) -> int: ...
    async def refuse(self, on: bool) -> None: ...


@dataclass
class LinkInfo:
    id: str
    type: str
    address: str  # pty path or host:port
    devices: list[str]


class Site:
    def __init__(self, loaded: LoadedScenario) -> None:
        self.loaded = loaded
        sc = loaded.scenario
        self.env = Environment()
        self.devices: dict[str, EmulatedDevice] = {}
        self.behaviours: dict[str, Behaviour] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.link_types = {link.id: link.type for link in sc.links}
        self._tasks: list[asyncio.Task[None]] = []
        self._started = 0.0
        self.speed = 1.0  # scenario seconds per real second: a scenario with a clock runs its timeline faster
        self.nodes: dict[str, NodeEmulator] = {}
        self.meters: dict[str, Any] = {}  # IEC 62056-21 meters, M-Bus meters, ASCII sensors
        emulated = {link.id for link in sc.links if link.hardware is None}
        metered = {link.id: link for link in sc.links if isinstance(link, EmuMeterLink) and link.hardware is None}
        for meter_link in metered.values():
            self.endpoints[meter_link.id] = MeterLine(
                meter_link.type, meter_link.baudrate, meter_link.parity, meter_link.bytesize, meter_link.wire_timing
            )
        for i, d in enumerate(sc.devices):
            if d.link in metered:
                line = self.endpoints[d.link]
                assert isinstance(line, MeterLine)
                meter = make_meter(
                    LINE_TYPES[metered[d.link].type], loaded.resolved[d.id], line.line, d.address, d.options
                )
                meter.faults.update(d.faults)
                meter.values.update(d.values)
                line.attach(meter)
                self.meters[d.id] = meter
                continue
            if d.link not in emulated:
                continue
            assert d.unit is not None  # the scenario check asks for it on Modbus links
            device = EmulatedDevice(d.id, loaded.resolved[d.id], d.unit, strict=d.strict)
            name = d.behaviour or loaded.resolved[d.id].profile.emulator or "static"
            rng = random.Random(sc.seed * 1000 + i)
            self.behaviours[d.id] = BEHAVIOURS[name](device, d.options, self.env, rng)
            device.faults.update(d.faults)
            self.devices[d.id] = device
        self.env.behaviours = self.behaviours
        for link in sc.links:
            if link.hardware is not None or link.id in metered:
                continue
            members = [self.devices[d.id] for d in sc.devices if d.link == link.id]
            if isinstance(link, EmuRtuLink):
                self.endpoints[link.id] = SerialEndpoint(
                    members,
                    baudrate=link.baudrate,
                    parity=link.parity,
                    stopbits=link.stopbits,
                    wire_timing=link.wire_timing,
                )
            elif isinstance(link, EmuTcpLink):
                self.endpoints[link.id] = TcpEndpoint(members, port=link.port, rtu=link.type == "modbus-rtu-tcp")

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._started = time.monotonic()
        self._power_on(list(self.devices))
        try:
            for endpoint in self.endpoints.values():
                await endpoint.start()
        except BaseException:
            await self.stop()
            raise
        self._tasks.append(asyncio.create_task(self._tick_loop(), name="hil-behaviours"))

    def _power_on(self, ids: list[str], *, first: bool = True) -> None:
        """Registers to their power-on values. Behaviour state (energy counters, lamp levels)
        survives a reboot, as it does in non-volatile memory, and is rewritten on the next tick."""
        now = time.monotonic()
        scenario_devices = {d.id: d for d in self.loaded.scenario.devices}
        for device_id in ids:
            device = self.devices[device_id]
            device.reset()
            for point, value in scenario_devices[device_id].values.items():
                device.set(point, value)
            if first:
                self.behaviours[device_id].start(now)
            self.behaviours[device_id].tick(now, 0.0)  # plausible values from the first request on

    async def start_nodes(self, broker_host: str, broker_port: int, flash_root: Path) -> None:
        """ESP32 nodes need the broker they report to; start them once it is known."""
        for n in self.loaded.scenario.nodes:
            node = NodeEmulator(
                flash_root / n.id,
                n.id,
                broker_host,
                broker_port,
                config={"sensors": n.sensors, **n.config},
                hardware=dict(n.hardware),
            )
            self.nodes[n.id] = node
            await node.start()

    async def stop(self) -> None:
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                await node.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for endpoint in self.endpoints.values():
            with contextlib.suppress(Exception):
                await endpoint.stop()

    async def __aenter__(self) -> Site:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _tick_loop(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            for device_id, behaviour in self.behaviours.items():
                try:
                    behaviour.tick(now, now - last)
                except Exception:  # one broken model must not freeze the whole site
                    log.exception("behaviour of %s failed", device_id)
            self._count_meters(now - last)
            last = now

    def _count_meters(self, dt: float) -> None:
        """Meters with `rates` options count up: energy and volume indexes that move while the site runs."""
        for d in self.loaded.scenario.devices:
            rates = d.options.get("rates") if d.id in self.meters else None
            if not isinstance(rates, dict):
                continue
            values = self.meters[d.id].values
            for point, rate in rates.items():
                if isinstance(values.get(point), (int, float)) and isinstance(rate, (int, float)):
                    values[point] = round(float(values[point]) + rate * dt, 6)

    @property
    def elapsed(self) -> float:
        return (time.monotonic() - self._started) * self.speed

    # -- what is where ----------------------------------------------------------------------

    def links(self) -> list[LinkInfo]:
        sc = self.loaded.scenario
        return [
            LinkInfo(
                link.id,
                link.type,
                link.hardware or self.endpoints[link.id].address,
                [d.id for d in sc.devices if d.link == link.id],
            )
            for link in sc.links
        ]

    def endpoint_addresses(self) -> dict[str, str]:
        return {link_id: e.address for link_id, e in self.endpoints.items()}

    def describe(self) -> dict[str, Any]:
        return {
            "scenario": self.loaded.scenario.name,
            "pid": os.getpid(),
            "links": [vars(info) for info in self.links()],
            "devices": [
                {
                    "id": d.id,
                    "unit": d.unit,
                    "profile": d.resolved.name,
                    "behaviour": self.behaviours[d.id].name,
                    "faults": d.faults.active(),
                    "stats": vars(d.stats),
                }
                for d in self.devices.values()
            ]
            + [
                {
                    "id": device_id,
                    "address": next(d.address for d in self.loaded.scenario.devices if d.id == device_id),
                    "profile": meter.profile.name,
                    "faults": {k: v for k, v in vars(meter.faults).items() if v},
                    "stats": stats_of(meter),
                }
                for device_id, meter in self.meters.items()
            ],
        }

    # -- control ----------------------------------------------------------------------------

    def device(self, device_id: str) -> EmulatedDevice:
        if device_id not in self.devices:
            known = ", ".join([*self.devices, *self.meters])
            raise ValueError(f"no emulated device '{device_id}' (devices: {known})")
        return self.devices[device_id]

    def endpoint(self, link_id: str) -> Endpoint:
        if link_id not in self.endpoints:
            raise ValueError(f"no emulated link '{link_id}' (links: {', '.join(self.endpoints)})")
        return self.endpoints[link_id]

    def set_fault(self, device_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        if device_id in self.meters:
            faults = self.meters[device_id].faults
            faults.update(changes)
            active = {k: v for k, v in vars(faults).items() if v}
            log.info("fault %s: %s", device_id, active or "none")
            return active
        device = self.device(device_id)
        device.faults.update(changes)
        log.info("fault %s: %s", device_id, device.faults.active() or "none")
        return device.faults.active()

    def clear_faults(self, device_id: str | None = None) -> None:
        for meter_id, meter in self.meters.items():
            if device_id in (None, meter_id):
                meter.faults = type(meter.faults)()
        if device_id in self.meters:
            return
        for device in [self.device(device_id)] if device_id else list(self.devices.values()):
            device.faults = type(device.faults)()

    async def reboot(self, device_id: str, downtime: float = 2.0) -> None:
        """Registers back to power-on values, silent for `downtime`, TCP connections dropped."""
        if device_id in self.meters:
            raise ValueError(f"'{device_id}' is a meter: silence it with the silent fault instead")
        device = self.device(device_id)
        device.stats.reboots += 1
        device.silent_until = time.monotonic() + downtime
        self._power_on([device_id], first=False)
        for d in self.loaded.scenario.devices:
            if d.id == device_id and d.link in self.endpoints:
                self.endpoints[d.link].drop_connections()
        log.info("reboot %s (silent for %.1fs)", device_id, downtime)

    def drop(self, link_id: str) -> int:
        return self.endpoint(link_id).drop_connections()

    async def refuse(self, link_id: str, on: bool) -> None:
        await self.endpoint(link_id).refuse(on)

    def noise(self, link_id: str, count: int) -> None:
        endpoint = self.endpoint(link_id)
        if isinstance(endpoint, MeterLine):
            endpoint.noise(count)
            return
        if not isinstance(endpoint, SerialEndpoint):
            raise ValueError(f"link '{link_id}' is not a serial line; use the garbage fault on a device instead")
        endpoint.line.inject_noise(os.urandom(count))

    def stimulus(self, device_id: str, name: str, args: dict[str, Any]) -> None:
        if device_id in self.meters:
            raise ValueError(f"'{device_id}' is a meter: it takes faults and values, not stimuli")
        self.device(device_id)
        self.behaviours[device_id].inject(name, args)

    def set_value(self, device_id: str, point: str, value: Value) -> None:
        if device_id in self.meters:
            values = self.meters[device_id].values
            if point not in values:
                raise ValueError(f"meter '{device_id}' has no point '{point}'")
            values[point] = value
            return
        self.device(device_id).set(point, value)

    def get_value(self, device_id: str, point: str) -> Value:
        if device_id in self.meters:
            value: Value = self.meters[device_id].values[point]
            return value
        return self.device(device_id).get(point)

    async def apply(self, step: Step) -> None:
        """Carry out one timeline step."""
        if step.node is not None:
            node = self.nodes.get(step.node)
            if node is None:
                raise ValueError(f"node '{step.node}' is not running (nodes need a broker)")
            if step.wifi is not None:
                node.restore_wifi() if step.wifi == "on" else node.cut_wifi()
            elif step.hardware is not None:
                node.set_hardware(**step.hardware)
            else:
                await node.kill("power_on")
            return
        if step.device is not None:
            if step.fault is not None:
                self.set_fault(step.device, step.fault)
            elif step.clear:
                self.clear_faults(step.device)
            elif step.action == "reboot":
                await self.reboot(step.device, float(step.args.get("downtime", 2.0)))
            elif step.stimulus is not None:
                self.stimulus(step.device, step.stimulus, step.args)
            elif step.set is not None:
                for point, value in step.set.items():
                    self.set_value(step.device, point, value)
            else:
                raise ValueError(f"action {step.action} applies to links, not devices")
        elif step.link is not None:
            if step.action == "drop":
                self.drop(step.link)
            elif step.action in ("refuse", "accept"):
                await self.refuse(step.link, step.action == "refuse")
            elif step.action == "noise":
                self.noise(step.link, int(step.args.get("bytes", 16)))
            else:
                raise ValueError(f"links take the actions drop, refuse, accept and noise, not {step.action}")

    async def run_timeline(self, on_step: Callable[[str], None] | None = None) -> None:
        """Apply every step at its time after the start; errors are logged, the site keeps running.
        `on_step` hears of each step as it is applied (or fails), in words."""
        for step in sorted(self.loaded.scenario.timeline, key=lambda s: s.at):
            delay = step.at - self.elapsed
            if delay > 0:
                await asyncio.sleep(delay / self.speed)
            what = " ".join(f"{k}={v}" for k, v in step.model_dump(exclude_defaults=True, exclude={"at"}).items())
            try:
                await self.apply(step)
                log.info("t=%.1fs %s", self.elapsed, what)
                said = f"t={self.elapsed:5.1f}s  step     {what}"
            except ValueError as exc:
                log.error("t=%.1fs step failed: %s", self.elapsed, exc)
                said = f"t={self.elapsed:5.1f}s  step     {what}: FAILED ({exc})"
            if on_step is not None:
                on_step(said)
