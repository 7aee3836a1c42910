"""The live state store: every device of every source, its current values and health, and the gateway's own.

Sources (the polled links, the ESP32 nodes) add the devices they run; the store keeps
a reference to each live device, so a read is always current and costs nothing on
the poll path. Whatever wants to know the state of the site (the MQTT tree, requests,
a metrics exporter, a dashboard, automation) reads it here. The store also derives,
from health changes, the device online and offline events, once for every source.
"""

from __future__ import annotations

import resource
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gateway import __version__
from gateway.core.events import DeviceOffline, DeviceOnline, EventBus, HealthChanged
from gateway.core.supervision import InputFaults, Supervisor
from gateway.points.types import Value
from gateway.profiles.expand import ResolvedProfile

STATES = ("online", "degraded", "offline")


class LiveHealth(Protocol):
    @property
    def known(self) -> bool: ...  # a first cycle (or message) has been seen

    @property
    def state_name(self) -> str: ...  # online | degraded | offline

    def to_json(self) -> dict[str, Any]: ...


class LiveDevice(Protocol):
    """What a source exposes of each device it runs."""

    @property
    def id(self) -> str: ...

    @property
    def source(self) -> str: ...  # which source runs it: "polled", "node", ...

    @property
    def resolved(self) -> ResolvedProfile: ...

    @property
    def values(self) -> Mapping[str, Value]: ...  # the current values (points that failed are absent)

    @property
    def errors(self) -> Mapping[str, str]: ...  # why each failed point has no value

    @property
    def health(self) -> LiveHealth: ...

    def point_ts(self, name: str) -> int | None:
        """Epoch ms of the point's latest reading, or None if it has none yet."""
        ...

    def describe(self) -> dict[str, Any]:
        """Where and how the device is reached, for the device list: link and address, or node topics."""
        ...


@dataclass(frozen=True, slots=True)
class Reading:
    value: Value | None
    error: str | None  # None: a good value
    ts: int | None


class StateStore:
    def __init__(
        self, bus: EventBus, *, faults: InputFaults | None = None, supervisor: Supervisor | None = None
    ) -> None:
        self.bus = bus
        self.faults = faults or InputFaults()
        self.supervisor = supervisor or Supervisor()
        self.started = time.time()
        self._devices: dict[str, LiveDevice] = {}
        self._sections: dict[str, Callable[[], Any]] = {}
        self._offline: dict[str, bool] = {}  # the last availability announced per device
        bus.subscribe(HealthChanged, self._on_health)

    # -- devices ----------------------------------------------------------------------------------

    def add(self, device: LiveDevice) -> None:
        self._devices[device.id] = device

    def remove(self, device_id: str) -> None:
        self._devices.pop(device_id, None)
        self._offline.pop(device_id, None)

    def get(self, device_id: str) -> LiveDevice | None:
        return self._devices.get(device_id)

    def devices(self) -> Iterator[LiveDevice]:
        return iter(list(self._devices.values()))

    def reading(self, device_id: str, point: str) -> Reading | None:
        device = self._devices.get(device_id)
        if device is None:
            return None
        return Reading(device.values.get(point), device.errors.get(point), device.point_ts(point))

    def counts(self) -> dict[str, int]:
        """Devices by state; one not heard from yet counts as its source starts it (polled: online)."""
        found = Counter(d.health.state_name for d in self._devices.values())
        return {state: found.get(state, 0) for state in STATES}

    def _on_health(self, event: HealthChanged) -> None:
        """Online/offline once per crossing, and for a device first seen offline, whatever the source."""
        offline = event.state == "offline"
        before = self._offline.get(event.device)  # None: nothing said about this device yet
        self._offline[event.device] = offline
        if before == offline or (before is None and not offline):
            return
        self.bus.publish(DeviceOffline(event.device, event.reason) if offline else DeviceOnline(event.device))

    # -- the gateway --------------------------------------------------------------------------------

    def section(self, name: str, provider: Callable[[], Any]) -> None:
        """Add a section to the gateway health (links, outbox, mqtt, nodes, ...)."""
        self._sections[name] = provider

    def gateway_health(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        health: dict[str, Any] = {
            "ts": int(time.time() * 1000),
            "version": __version__,
            "uptime_s": round(time.time() - self.started, 1),
            "memory_mb": resident_mb(),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "devices": self.counts(),
        }
        for name, provider in self._sections.items():
            try:
                health[name] = provider()
            except Exception as exc:  # one broken section must not cost the others
                self.faults.reject("health_section", name, repr(exc))
        health["dropped_inputs"] = self.faults.to_json()
        health["tasks"] = self.supervisor.to_json()
        return health


def resident_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
