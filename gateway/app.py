"""The gateway a city installs: its sources, its core, its outputs, run until told to stop.

Data flows from the sources (polled links through the engine, ESP32 nodes) into the
core (the event bus, the live state store, the command service) and out through the
features that publish the CityEdge topic tree and Home Assistant discovery over the
MQTT session. `Gateway.run()` starts everything, handles SIGTERM/SIGINT, reloads on
request or SIGHUP (only what changed restarts), and on a clean stop says offline before
disconnecting.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any

from gateway.common.problems import ConfigError
from gateway.config.loader import LoadedConfig, load_config
from gateway.core.commands import CommandService
from gateway.core.engine import Engine, EngineSource
from gateway.core.events import (
    ClientIdConflict,
    EventBus,
    GatewayStarted,
    OutboxDropped,
    ReloadApplied,
    ReloadRefused,
)
from gateway.core.state import StateStore
from gateway.core.supervision import InputFaults, Supervisor
from gateway.edge.alarms.manager import AlarmManager
from gateway.edge.alarms.rules import site_rules
from gateway.edge.clock import Clock, SystemClock, sleep_or_wake
from gateway.edge.indicators.tracker import Indicators
from gateway.edge.lighting.controller import LightingController
from gateway.north.extensions.alarms import AlarmPublisher
from gateway.north.extensions.availability import Availability
from gateway.north.extensions.base import Context, Extension
from gateway.north.extensions.commands import Commands
from gateway.north.extensions.devices import DeviceList
from gateway.north.extensions.events import EventPublisher
from gateway.north.extensions.health import GatewayHealth
from gateway.north.extensions.homeassistant import HomeAssistant
from gateway.north.extensions.indicators import IndicatorPublisher
from gateway.north.extensions.lighting import LightingPublisher
from gateway.north.extensions.requests import Requests
from gateway.north.extensions.state import StatePublisher
from gateway.north.http import web_modules
from gateway.north.mqtt import MqttLink, gateway_session
from gateway.north.outbox import Outbox
from gateway.south.nodes.source import NodeSource

log = logging.getLogger("cityedge")

EXTENSIONS: tuple[type[Extension], ...] = (
    StatePublisher,
    Availability,
    GatewayHealth,
    DeviceList,
    EventPublisher,
    Commands,
    Requests,
    HomeAssistant,
    LightingPublisher,
    AlarmPublisher,
    IndicatorPublisher,
)


class Gateway:
    def __init__(self, path: Path, loaded: LoadedConfig | None = None, clock: Clock | None = None) -> None:
        self.path = path
        self.clock = clock or SystemClock()  # edge automation's time: a test passes a simulated one
        self.loaded = loaded or load_config(path)
        config = self.loaded.config
        self.bus = EventBus()
        self.faults = InputFaults()
        self.supervisor = Supervisor()
        self.store = StateStore(self.bus, faults=self.faults, supervisor=self.supervisor)
        self.commands = CommandService(self.bus, self.store, lambda: self.loaded.config.gateway.sbo_timeout)
        self.engine = Engine(self.bus, store=self.store, supervisor=self.supervisor)
        self.queue = Outbox(
            config.store,
            on_drop=lambda d: self.bus.publish(OutboxDropped(**d)),
            faults=self.faults,
            supervisor=self.supervisor,
        )
        self.mqtt = MqttLink(
            config.mqtt, self.queue, gateway_session(config), faults=self.faults, supervisor=self.supervisor
        )
        self.mqtt.on_takeover = lambda broker: self.bus.publish(ClientIdConflict(broker, config.client_id))
        self.nodes = NodeSource(
            self.loaded, self.bus, self.store, self.mqtt, faults=self.faults, supervisor=self.supervisor
        )
        self.commands.add_source("polled", EngineSource(self.engine))
        self.commands.add_source("node", self.nodes)
        self.store.section("links", self.engine.link_health)
        self.store.section("outbox", self.queue.status)
        self.store.section("mqtt", self.mqtt.status)
        self.ctx = Context(self.loaded, self.bus, self.store, self.commands, self.reload, self.faults, self.supervisor)
        self.extensions = [cls(self.ctx, self.mqtt) for cls in EXTENSIONS]
        self.lighting: LightingController | None = None
        if config.lighting is not None:
            self.lighting = LightingController(
                config.lighting, self.bus, self.store, self.commands, self.clock, self.supervisor
            )
            self.ctx.actions["override"] = self.lighting.override
            self.ctx.actions["lighting"] = self._lighting_status
            self.store.section("lighting", self.lighting.status)
        self.indicators: Indicators | None = None
        if config.indicators is not None:
            zone = config.lighting.site.timezone if config.lighting is not None else "UTC"
            kept = config.store.path.parent / "indicators.json"
            self.indicators = Indicators(config.indicators, self.bus, self.clock, kept, zone)
            self.ctx.actions["indicators"] = self._indicators
            self.store.section("indicators", self.indicators.snapshot)
        self.alarms: AlarmManager | None = None
        configured, shipped = site_rules(self.loaded)
        rules = configured + shipped
        if rules:
            kept = config.store.path.parent / "alarms.json"
            self.alarms = AlarmManager(rules, self.bus, self.clock, kept)
            self.ctx.actions.update(ack=self.alarms.acknowledge, shelve=self.alarms.shelve, alarms=self.alarms.listing)
            self.store.section("alarms", self.alarms.list)
        self.web: list[Any] = []  # the operators' window: metrics and the dashboard, each on its own address
        if config.metrics is not None:
            web_modules("metrics endpoint")
            from gateway.north.metrics.server import MetricsServer

            self.web.append(MetricsServer(config.metrics, self.store, config.gateway.id))
        if config.dashboard is not None:
            web_modules("dashboard")
            from gateway.north.dashboard.server import Dashboard

            self.web.append(Dashboard(config.dashboard, self.ctx, self.store))
        self.stopping = asyncio.Event()
        self._reloading = asyncio.Lock()

    async def start(self) -> None:
        for extension in self.extensions:
            extension.start()
        self.nodes.start()
        self.queue.start()
        await self.engine.start(self.loaded)  # the devices are in the store before the first birth messages
        self.mqtt.start()
        if self.indicators is not None:
            self.indicators.start()  # before the lighting, so the first levels are counted
            self.supervisor.spawn("indicators", self.indicators.run)
        if self.lighting is not None:
            self.lighting.start()  # from the time it is now: no switch point missed, none played twice
        if self.alarms is not None:
            self.alarms.start()  # the kept list first: nothing announced again
            self.supervisor.spawn("alarms", self._alarm_clock)
        for listener in self.web:
            await listener.start()
        config = self.loaded.config
        self.bus.publish(GatewayStarted(devices=len(config.devices), links=len(config.links)))
        log.info(
            "gateway %s started: %d links, %d devices, %d nodes, MQTT %s:%d under %s",
            config.gateway.id,
            len(config.links),
            len(config.devices),
            len(config.nodes),
            config.mqtt.host,
            config.mqtt.port,
            config.base_topic,
        )

    async def _indicators(self, data: dict[str, Any]) -> dict[str, Any]:
        assert self.indicators is not None
        return self.indicators.snapshot()

    async def _alarm_clock(self) -> None:
        """Delays, offline times and shelvings run out with the (injectable) clock: sleep until the next one is
        due (or a minute), or until a new one starts."""
        alarms = self.alarms
        assert alarms is not None
        while True:
            alarms.tick()
            now = self.clock.now()
            due = min(filter(None, (alarms.next_due(), now + timedelta(seconds=60))))
            alarms.timer.clear()
            await sleep_or_wake(self.clock, due, alarms.timer)

    async def _lighting_status(self, data: dict[str, Any]) -> dict[str, Any]:
        assert self.lighting is not None
        return self.lighting.status()

    async def stop(self) -> None:
        log.info("stopping")
        for listener in self.web:
            await listener.stop()
        if self.lighting is not None:
            await self.lighting.stop()
        if self.alarms is not None:
            self.alarms.stop()
            await self.supervisor.cancel("alarms")
        if self.indicators is not None:
            self.indicators.stop()
            await self.supervisor.cancel("indicators")
        await self.engine.stop()
        await self.nodes.stop()
        for extension in reversed(self.extensions):
            await extension.stop()
        await self.mqtt.stop()
        await self.queue.stop()
        await self.supervisor.stop()

    async def reload(self) -> dict[str, Any]:
        """Re-read the configuration file; nothing changes if it is invalid (ConfigError, logged and announced).

        One reload at a time: a second request (or SIGHUP) waits for the first and then reads the file again.
        """
        async with self._reloading:
            try:
                loaded = await asyncio.to_thread(load_config, self.path)
            except ConfigError as exc:
                problems = [str(p) for p in exc.problems]
                log.warning(
                    "configuration not applied, the gateway goes on with the one it runs: %d problem(s): %s",
                    len(problems),
                    "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else ""),
                )
                self.bus.publish(ReloadRefused(tuple(problems[:20])))
                raise
            report = await self._apply(loaded)
        self.bus.publish(ReloadApplied(report))
        return report

    async def _apply(self, loaded: LoadedConfig) -> dict[str, Any]:
        notes = []
        old = self.loaded.config
        if loaded.config.mqtt != old.mqtt or loaded.config.gateway.id != old.gateway.id:
            notes.append("mqtt and gateway id changes take effect at the next restart")
            loaded = _keep_mqtt(loaded, old)
        report = await self.engine.apply(loaded)
        self.nodes.reload(loaded)
        self.loaded = self.ctx.loaded = loaded
        for extension in self.extensions:
            extension.reloaded()
        log.info("configuration reloaded: %s", report.to_json() or "no changes")
        return {**report.to_json(), **({"notes": notes} if notes else {})}

    def reload_on_signal(self) -> None:
        """SIGHUP, as `systemctl reload` sends it: reload in the background; a refused file is logged."""
        log.info("SIGHUP: reloading %s", self.path)

        async def reload() -> None:
            try:
                await self.reload()
            except ConfigError:
                pass  # logged and announced by reload(); the running configuration stays
            except Exception:  # once, not again and again: the next SIGHUP tries anew
                log.exception("reload failed; the gateway goes on with the configuration it runs")

        self.supervisor.spawn("reload", reload)  # a second SIGHUP meanwhile waits its turn

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_on_signal)
        await self.start()
        try:
            await self.stopping.wait()
        finally:
            await self.stop()


def _keep_mqtt(loaded: LoadedConfig, old: Any) -> LoadedConfig:
    config = loaded.config.model_copy(update={"mqtt": old.mqtt, "gateway": old.gateway})
    return LoadedConfig(loaded.path, config, loaded.source, loaded.registry, loaded.devices, loaded.nodes)
