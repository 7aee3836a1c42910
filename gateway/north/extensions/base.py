"""The tiny base every northbound feature extends, and the context they share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.config.loader import LoadedConfig
from gateway.core.engine import Engine
from gateway.core.events import EventBus
from gateway.core.supervision import InputFaults, Supervisor, guarded
from gateway.north.mqtt import MqttLink


@dataclass
class Context:
    loaded: LoadedConfig  # replaced on reload
    bus: EventBus
    engine: Engine
    mqtt: MqttLink
    reload: Callable[[], Awaitable[dict[str, Any]]]
    faults: InputFaults = field(default_factory=InputFaults)
    supervisor: Supervisor = field(default_factory=Supervisor)
    started: float = field(default_factory=time.time)
    # Set by the node bridge: forwards a validated command to an ESP32 node and returns what was set.
    node_commands: Callable[[str, dict[str, Any], str | None], Awaitable[dict[str, Any]]] | None = None
    # Extra sections of <base>/health, by name, from features that have something to report.
    health_sections: dict[str, Callable[[], dict[str, Any]]] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return self.loaded.config.base_topic


class Extension:
    """Constructors only store collaborators; all wiring happens in start()."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._tasks: list[str] = []

    def start(self) -> None:
        """Subscribe to events and topics."""

    async def stop(self) -> None:
        """Undo start(); called on a clean stop."""
        for name in self._tasks:
            await self.ctx.supervisor.cancel(name)

    def every_health_interval(self, action: Callable[[], None]) -> None:
        """Run `action` every gateway.health_interval (read each time, so a reload changes it).

        One failing run is counted and logged; the next one comes all the same.
        """
        name = f"{type(self).__name__}-periodic"

        async def loop() -> None:
            while True:
                await asyncio.sleep(self.ctx.loaded.config.gateway.health_interval)
                guarded(self.ctx.faults, "periodic_failed", name, action)

        self.ctx.supervisor.spawn(name, loop)
        self._tasks.append(name)

    def reloaded(self) -> None:
        """The configuration changed (ctx.loaded is the new one)."""
