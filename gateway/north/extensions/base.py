"""The tiny base every northbound feature extends, and the context they share."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.config.loader import LoadedConfig
from gateway.core.engine import Engine
from gateway.core.events import EventBus
from gateway.north.mqtt import MqttLink


@dataclass
class Context:
    loaded: LoadedConfig  # replaced on reload
    bus: EventBus
    engine: Engine
    mqtt: MqttLink
    reload: Callable[[], Awaitable[dict[str, Any]]]
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
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Subscribe to events and topics."""

    async def stop(self) -> None:
        """Undo start(); called on a clean stop."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def every_health_interval(self, action: Callable[[], None]) -> None:
        """Run `action` every gateway.health_interval (read each time, so a reload changes it)."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(self.ctx.loaded.config.gateway.health_interval)
                action()

        self._tasks.append(asyncio.create_task(loop(), name=f"{type(self).__name__}-periodic"))

    def reloaded(self) -> None:
        """The configuration changed (ctx.loaded is the new one)."""
