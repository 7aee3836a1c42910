"""An emulated site and an engine polling it, with the events it produced, for engine tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from gateway.config.loader import LoadedConfig, load_config
from gateway.core.engine import Engine
from gateway.core.events import DeviceUpdate, EventBus, HealthChanged, Notable
from hil.site.emulated import Site
from hil.site.scenario import gateway_config
from tests.waiting import until


class Harness:
    def __init__(self, site: Site, tmp: Path) -> None:
        self.site = site
        self.tmp = tmp
        self.bus = EventBus()
        self.engine = Engine(self.bus)
        self.updates: list[DeviceUpdate] = []
        self.health: list[HealthChanged] = []
        self.notable: list[Notable] = []
        self.bus.subscribe(DeviceUpdate, self.updates.append)
        self.bus.subscribe(HealthChanged, self.health.append)
        self.bus.subscribe(Notable, self.notable.append)

    def config(self, **device_extra: Any) -> LoadedConfig:
        data = gateway_config(self.site.loaded, self.site.endpoint_addresses())
        for device in data["devices"]:
            device.update({"report": {"mode": "periodic"}, **device_extra.get(device["id"], {})})
        for link in data["links"]:
            link["timeout"] = 0.25
        path = self.tmp / "gateway.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return load_config(path)

    async def start(self, **device_extra: Any) -> None:
        await self.engine.start(self.config(**device_extra))

    def latest(self, device: str) -> DeviceUpdate | None:
        return next((u for u in reversed(self.updates) if u.device == device), None)

    def state(self, device: str) -> str:
        return self.engine.devices[device].health.state.value

    async def until(self, check: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
        await until(check, timeout, what)

    async def stop(self) -> None:
        await self.engine.stop()
