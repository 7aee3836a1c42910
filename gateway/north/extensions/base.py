"""The tiny base every northbound feature extends, and the context they share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.config.loader import LoadedConfig
from gateway.core.commands import CommandService
from gateway.core.events import EventBus
from gateway.core.state import StateStore
from gateway.core.supervision import InputFaults, Supervisor, guarded
from gateway.north.mqtt import MqttLink


@dataclass
class Context:
    loaded: LoadedConfig  # replaced on reload
    bus: EventBus
    store: StateStore  # every device of every source, and the gateway's health
    commands: CommandService  # every command goes through it
    reload: Callable[[], Awaitable[dict[str, Any]]]
    faults: InputFaults = field(default_factory=InputFaults)
    supervisor: Supervisor = field(default_factory=Supervisor)
    # requests that edge features answer on `<base>/request/<action>` (lighting: override, lighting)
    actions: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return self.loaded.config.base_topic


class Extension:
    """A feature of the CityEdge tree: reads the bus and the state store, publishes through `mqtt`.

    Constructors only store collaborators; all wiring happens in start().
    """

    def __init__(self, ctx: Context, mqtt: MqttLink) -> None:
        self.ctx = ctx
        self.mqtt = mqtt  # the session the CityEdge tree is published on
        self._tasks: list[str] = []
        self._undo: list[Callable[[], None]] = []

    def start(self) -> None:
        """Subscribe to events and topics."""

    async def stop(self) -> None:
        """Undo start(); called on a clean stop."""
        for undo in self._undo:
            undo()
        for name in self._tasks:
            await self.ctx.supervisor.cancel(name)

    def subscribe(self, kind: type[Any], handler: Callable[[Any], None]) -> None:
        """Receive events of `kind` from the bus until stop()."""
        self._undo.append(self.ctx.bus.subscribe(kind, handler))

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
