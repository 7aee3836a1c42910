"""The engine of polled devices: one scheduler per link, devices on them, each link spoken by its driver.

Values and health changes leave as events on the bus; `write` and `read` go through
the link's priority lane; `link_health` describes the links for the health topic;
`apply` brings a new configuration in, restarting only what changed. Which protocol
a link speaks is its driver's business (`gateway.south.driver`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.config.loader import LoadedConfig
from gateway.config.model import DeviceConfig
from gateway.core.commands import CommandError, check_value, find_point
from gateway.core.device import Device
from gateway.core.events import EventBus
from gateway.core.health import State
from gateway.core.scheduler import LinkScheduler
from gateway.core.state import StateStore
from gateway.core.supervision import Supervisor
from gateway.points.types import NotFiniteError, PointValueError, Value
from gateway.profiles.expand import PointSpec
from gateway.south.driver import ConnectionFailed, DeviceRefused, TransactionError, link_driver

log = logging.getLogger("cityedge.engine")


@dataclass
class ApplyReport:
    """What a configuration change did."""

    links_started: list[str] = field(default_factory=list)
    links_stopped: list[str] = field(default_factory=list)
    links_restarted: list[str] = field(default_factory=list)
    devices_added: list[str] = field(default_factory=list)
    devices_removed: list[str] = field(default_factory=list)
    devices_restarted: list[str] = field(default_factory=list)
    unchanged: int = 0

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v}


class Engine:
    def __init__(self, bus: EventBus, *, store: StateStore | None = None, supervisor: Supervisor | None = None) -> None:
        self.bus = bus
        self.store = store
        self.supervisor = supervisor or Supervisor()
        self.links: dict[str, LinkScheduler] = {}
        self.devices: dict[str, Device] = {}
        self._link_of: dict[str, str] = {}
        self._gone: dict[str, Device] = {}  # devices replaced by a restart: what their drivers learned carries over
        self._loaded: LoadedConfig | None = None
        self._running = False

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self, loaded: LoadedConfig) -> None:
        self._running = True
        await self.apply(loaded)

    async def stop(self) -> None:
        self._running = False
        for scheduler in self.links.values():
            await scheduler.stop()
        if self.store is not None:
            for device_id in self.devices:
                self.store.remove(device_id)
        self.links.clear()
        self.devices.clear()
        self._link_of.clear()

    async def apply(self, loaded: LoadedConfig) -> ApplyReport:
        """Bring the engine to `loaded`: links and devices whose settings changed restart, the rest keep polling."""
        report = ApplyReport()
        old = self._loaded
        old_links = {link.id: link for link in old.config.links} if old else {}
        new_links = {link.id: link for link in loaded.config.links}
        old_devices = {d.id: d for d in old.config.devices} if old else {}
        for link_id in list(self.links):
            if link_id not in new_links or new_links[link_id] != old_links.get(link_id):
                await self._stop_link(link_id)
                (report.links_restarted if link_id in new_links else report.links_stopped).append(link_id)
        for device_id in list(self.devices):
            new = next((d for d in loaded.config.devices if d.id == device_id), None)
            if (
                new is None
                or not new.enabled
                or new != old_devices.get(device_id)
                or (old and _profile_of(loaded, device_id) != _profile_of(old, device_id))
            ):
                self._remove_device(device_id)
                if new is None or not new.enabled:
                    report.devices_removed.append(device_id)
        for link_id, link in new_links.items():
            if link_id not in self.links:
                driver = link_driver(link)
                self.links[link_id] = LinkScheduler(link_id, driver, driver.transport(link), self.bus, self.supervisor)
                if self._running:
                    self.links[link_id].start()
                if link_id not in report.links_restarted:
                    report.links_started.append(link_id)
        for config in loaded.config.devices:
            if not config.enabled:
                continue
            if config.id in self.devices:
                report.unchanged += 1
                continue
            self._add_device(config, loaded)
            (report.devices_restarted if config.id in old_devices else report.devices_added).append(config.id)
        self._gone.clear()  # removed for good
        self._loaded = loaded
        return report

    def _add_device(self, config: DeviceConfig, loaded: LoadedConfig) -> None:
        link = next(link for link in loaded.config.links if link.id == config.link)
        device = Device.on_link(config, loaded.devices[config.id], link)
        before = self._gone.pop(config.id, None)
        if before is not None and before.driver is device.driver and before.same_device(device):
            device.driver.carry_over(device, before.protocol_state)
            device.replan()
        self.devices[config.id] = device
        self._link_of[config.id] = config.link
        self.links[config.link].add(device)
        if self.store is not None:
            self.store.add(device)

    def _remove_device(self, device_id: str) -> None:
        link_id = self._link_of.pop(device_id, None)
        self._forget(device_id)
        if link_id in self.links:
            self.links[link_id].remove(device_id)
        if self.store is not None:
            self.store.remove(device_id)

    async def _stop_link(self, link_id: str) -> None:
        scheduler = self.links.pop(link_id)
        await scheduler.stop()
        for device_id in list(scheduler.devices):
            self._forget(device_id)
            self._link_of.pop(device_id, None)
            if self.store is not None:
                self.store.remove(device_id)

    def _forget(self, device_id: str) -> None:
        device = self.devices.pop(device_id, None)
        if device is not None:
            self._gone[device_id] = device

    # -- commands -------------------------------------------------------------------------------

    def point(self, device_id: str, name: str) -> tuple[Device, PointSpec]:
        found: tuple[Device, PointSpec] = find_point(self.devices, device_id, name)
        return found

    async def write(self, device_id: str, name: str, value: object, *, readback: bool = False) -> Value | None:
        """Validate, write through the priority lane, optionally read back. CommandError on any refusal."""
        device, point = self.point(device_id, name)
        checked = check_value(point, value)
        if device.health.state is State.OFFLINE:
            raise CommandError("device_offline", f"{device_id} is offline ({device.health.reason})", name)
        scheduler = self.links[self._link_of[device_id]]

        async def transact(request: Any) -> Any:
            return await scheduler.transaction(device, request)

        async def job() -> Value | None:
            await device.driver.write(transact, device, point, checked)
            return await device.driver.read(transact, device, point) if readback else None

        result: Value | None = await self._run(scheduler, device, point, job)
        if readback and result != checked and not _close(result, checked):
            raise CommandError("readback_mismatch", f"wrote {checked!r}, device reports {result!r}", name)
        return result

    async def read(self, device_id: str, name: str) -> Value:
        """Read one point now, ahead of polling."""
        device, point = self.point(device_id, name)
        if not point.access.readable:
            raise CommandError("write_only", f"{name} can be written but not read", name)
        scheduler = self.links[self._link_of[device_id]]

        async def transact(request: Any) -> Any:
            return await scheduler.transaction(device, request)

        try:
            result: Value = await self._run(
                scheduler, device, point, lambda: device.driver.read(transact, device, point)
            )
        except PointValueError as exc:
            code = exc.reason if isinstance(exc, NotFiniteError) else "decode_error"
            raise CommandError(code, f"{device_id}.{name}: {exc}", name) from None
        return result

    async def _run(self, scheduler: LinkScheduler, device: Device, point: PointSpec, job: Any) -> Any:
        # The lane may hold a poll cycle's current request and a few commands: allow for them.
        budget = 4 * device.timeout + 2.0
        try:
            return await asyncio.wait_for(scheduler.submit(job), budget)
        except TimeoutError:
            raise CommandError(
                "timeout", f"{device.id} did not complete the command in {budget:g}s", point.name
            ) from None
        except DeviceRefused as exc:
            raise CommandError(exc.command_code, f"{device.id} refused: {exc}", point.name, exc.code) from None
        except ConnectionFailed as exc:
            raise CommandError("device_offline", f"{device.id}: {exc}", point.name) from None
        except TransactionError as exc:
            raise CommandError(
                "timeout" if exc.kind == "timeout" else "transport_error", f"{device.id}: {exc}", point.name
            ) from None

    # -- health -----------------------------------------------------------------------------------

    def device_states(self) -> dict[str, int]:
        counts = Counter(d.health.state.value for d in self.devices.values())
        return {state.value: counts.get(state.value, 0) for state in State}

    def health(self) -> dict[str, Any]:
        return {"links": self.link_health(), "devices": self.device_states()}

    def link_health(self) -> dict[str, Any]:
        return {link_id: s.health() for link_id, s in self.links.items()}


class EngineSource:
    """The engine as the command service's source of polled devices."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def write(self, device_id: str, values: Mapping[str, Value], *, readback: bool) -> dict[str, Value | None]:
        return {
            name: await self.engine.write(device_id, name, value, readback=readback) for name, value in values.items()
        }

    async def read(self, device_id: str, point: str) -> tuple[Value, int]:
        value = await self.engine.read(device_id, point)
        return value, Device.timestamp()


def _profile_of(loaded: LoadedConfig, device_id: str) -> object:
    resolved = loaded.devices.get(device_id)
    return resolved.profile if resolved else None


def _close(a: object, b: object) -> bool:
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return abs(a - b) <= max(1e-6, abs(b) * 1e-6)
    return False
