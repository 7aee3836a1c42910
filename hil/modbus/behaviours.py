"""Behaviour models: what makes an emulated device's values move like the real thing.

Each model drives the points of one device every tick and reacts to writes and to
injected stimuli (a lamp failure, an over-current trip, rain). Models find their
points by the names the shipped profiles use, so they also work for a new profile
that follows the same naming (`voltage_l1`, `ballast_3_arc_power`, ...).
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hil.modbus.device import EmulatedDevice, WriteEvent


@dataclass
class Environment:
    """What devices of one site share: the weather, and a way to find each other."""

    rain_mm_h: float = 0.0
    behaviours: dict[str, Behaviour] = field(default_factory=dict)


class Behaviour:
    name: ClassVar[str] = "static"
    stimuli: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, device: EmulatedDevice, options: dict[str, Any], env: Environment, rng: random.Random):
        unknown = set(options) - set(self.defaults)
        if unknown:
            allowed = ", ".join(sorted(self.defaults)) or "none"
            raise ValueError(f"behaviour {self.name}: unknown option {', '.join(sorted(unknown))} (options: {allowed})")
        self.device, self.env, self.rng = device, env, rng
        self.options = {**self.defaults, **options}
        device.on_write.append(self.on_write)

    def start(self, now: float) -> None:
        """Called once, and again after a reboot."""

    def tick(self, now: float, dt: float) -> None:
        """Advance the model by dt seconds."""

    def on_write(self, event: WriteEvent) -> None:
        """A master wrote a point."""

    def inject(self, stimulus: str, args: dict[str, Any]) -> None:
        if stimulus not in self.stimuli:
            known = ", ".join(self.stimuli) or "none"
            raise ValueError(f"behaviour {self.name} has no stimulus '{stimulus}' (stimuli: {known})")
        getattr(self, "stimulus_" + stimulus)(**args)

    def _set(self, point: str, value: float | int | bool | str) -> None:
        if self.device.has(point):
            self.device.set(point, value)


class Static(Behaviour):
    """The profile's initial values, changed only by writes."""


class EnergyMeter(Behaviour):
    """Voltages around nominal with noise, currents and power from a load, energy that only grows."""

    name = "meter"
    stimuli = ("supply_loss", "supply_restored")
    defaults: ClassVar[dict[str, Any]] = {
        "nominal_voltage": 230.0,
        "frequency": 50.0,
        "load_a": 8.0,  # per phase, when no lamp controller feeds it
        "power_factor": 0.96,
        "noise_v": 0.6,
        "load_from": None,  # id of a lamp controller whose lamps this meter feeds
        "watts_per_lamp": 90.0,
    }

    def start(self, now: float) -> None:
        self.phases = ["_l1", "_l2", "_l3"] if self.device.has("voltage_l1") else [""]
        self.energy_import = float(self.device.get("energy_import")) if self.device.has("energy_import") else 0.0
        self.t0 = now
        self.lost: set[str] = set()  # phases without supply: no voltage, no current

    def stimulus_supply_loss(self, phase: str | None = None) -> None:
        """The feeder loses its supply: on every phase, or on one (`l1`, `l2`, `l3`)."""
        if phase is not None and f"_{phase}" not in self.phases:
            raise ValueError(f"no phase {phase!r} (phases: {', '.join(p.strip('_') or 'single' for p in self.phases)})")
        self.lost = set(self.phases) if phase is None else self.lost | {f"_{phase}"}

    def stimulus_supply_restored(self) -> None:
        self.lost = set()

    def _load_current(self, voltage: float, now: float) -> float:
        source = self.env.behaviours.get(self.options["load_from"] or "")
        if isinstance(source, LampController):
            watts = source.power_watts(self.options["watts_per_lamp"]) / len(self.phases)
            return float(watts / (voltage * self.options["power_factor"]) + 0.05)
        return float(self.options["load_a"]) * (1 + 0.1 * math.sin((now - self.t0) / 30))

    def tick(self, now: float, dt: float) -> None:
        pf = self.options["power_factor"]
        total_p = total_s = 0.0
        for phase in self.phases:
            v = (
                self.options["nominal_voltage"]
                + 2 * math.sin((now - self.t0) / 60)
                + self.rng.gauss(0, self.options["noise_v"])
            )
            i = max(0.0, self._load_current(v, now) + self.rng.gauss(0, 0.02))
            if phase in self.lost:
                v = i = 0.0
            p, s = v * i * pf, v * i
            total_p, total_s = total_p + p, total_s + s
            self._set(f"voltage{phase}", round(v, 2))
            self._set(f"current{phase}", round(i, 3))
            self._set(f"power{phase}", round(p, 1))
        suffix = "_total" if self.phases[0] else ""
        self._set(f"power{suffix}", round(total_p, 1))
        self._set(f"apparent_power{suffix}", round(total_s, 1))
        self._set(f"reactive_power{suffix}", round(math.sqrt(max(0.0, total_s**2 - total_p**2)), 1))
        self._set("power_factor", pf)
        self._set(
            "frequency", round(self.options["frequency"] + 0.02 * math.sin(now / 7) + self.rng.gauss(0, 0.005), 3)
        )
        self.energy_import += total_p * dt / 3.6e6
        self._set("energy_import", round(self.energy_import, 3))
        self._set("energy_total", round(self.energy_import, 3))


class LampController(Behaviour):
    """DALI lamp gateway: levels fade to the commanded arc power; failures set status bits."""

    name = "lamp"
    stimuli = ("lamp_failure", "ballast_failure", "repair")
    defaults: ClassVar[dict[str, Any]] = {"initial_level": 100, "fade_time": 3}  # DALI fade time code
    _BALLAST = re.compile(r"^ballast_(\d+)_arc_power$")

    @dataclass
    class Ballast:
        target: float = 0.0
        start_level: float = 0.0
        started: float = 0.0
        level: float = 0.0
        lamp_failed: bool = False
        ballast_failed: bool = False

    def start(self, now: float) -> None:
        indexes = sorted(int(m.group(1)) for p in self.device.points if (m := self._BALLAST.match(p)))
        level = float(self.options["initial_level"])
        self.ballasts = {i: self.Ballast(level, level, now, level) for i in indexes}
        self.groups = len([p for p in self.device.points if re.match(r"^group_\d+_arc_power$", p)])
        self.now = now
        for i in self.ballasts:
            self._set(f"ballast_{i}_device_type", "led")
            for point, value in (
                ("physical_min_level", 1),
                ("min_level", 1),
                ("max_level", 100),
                ("power_on_level", 100),
                ("failure_level", 100),
                ("fade_time", self.options["fade_time"]),
                ("fade_rate", 7),
                ("arc_power", int(level)),
            ):
                self._set(f"ballast_{i}_{point}", value)
        self._publish()

    @property
    def fade_seconds(self) -> float:
        code = int(self.options["fade_time"])
        return 0.0 if code == 0 else 0.5 * math.sqrt(2**code)

    def _command(self, indexes: list[int], level: float) -> None:
        for i in indexes:
            b = self.ballasts[i]
            b.start_level, b.started, b.target = b.level, self.now, level
            self._set(f"ballast_{i}_arc_power", int(level))

    def on_write(self, event: WriteEvent) -> None:
        name, value = event.point, float(event.value)
        if m := self._BALLAST.match(name):
            self._command([int(m.group(1))], value)
        elif m := re.match(r"^group_(\d+)_arc_power$", name):
            group = int(m.group(1))
            self._command([i for i in self.ballasts if self.groups and i % self.groups == group], value)
        elif name == "broadcast_arc_power":
            self._command(list(self.ballasts), value)

    def tick(self, now: float, dt: float) -> None:
        self.now = now
        fade = self.fade_seconds
        for b in self.ballasts.values():
            if b.lamp_failed or b.ballast_failed:
                b.level = 0.0
                continue
            progress = 1.0 if fade == 0 else min(1.0, (now - b.started) / fade)
            b.level = b.start_level + (b.target - b.start_level) * progress
        self._publish()

    def _publish(self) -> None:
        failures = [0, 0, 0, 0]
        for i, b in self.ballasts.items():
            failed = b.lamp_failed or b.ballast_failed
            status = (
                (1 if b.ballast_failed else 0) | (2 if b.lamp_failed else 0) | (4 if b.level > 0 and not failed else 0)
            )
            self._set(f"ballast_{i}_status", status)
            self._set(f"ballast_{i}_level", round(b.level))
            if b.lamp_failed and i < 64:
                failures[i // 16] |= 1 << (i % 16)
        for f, bits in enumerate(failures):
            self._set(f"lamp_failures_{f}", bits)

    def power_watts(self, watts_per_lamp: float) -> float:
        return sum(b.level / 100 * watts_per_lamp for b in self.ballasts.values())

    def _ballast(self, ballast: int) -> Ballast:
        if ballast not in self.ballasts:
            raise ValueError(f"no ballast {ballast} (ballasts 0..{max(self.ballasts, default=-1)})")
        return self.ballasts[ballast]

    def stimulus_lamp_failure(self, ballast: int = 0) -> None:
        self._ballast(int(ballast)).lamp_failed = True

    def stimulus_ballast_failure(self, ballast: int = 0) -> None:
        self._ballast(int(ballast)).ballast_failed = True

    def stimulus_repair(self, ballast: int = 0) -> None:
        b = self._ballast(int(ballast))
        b.lamp_failed = b.ballast_failed = False
        b.start_level, b.started = 0.0, self.now


class ProtectionRelay(Behaviour):
    """Feeder relay: open/close commands move the breaker; an over-current trips it."""

    name = "relay"
    stimuli = ("overcurrent", "load")
    defaults: ClassVar[dict[str, Any]] = {"load_a": 42.0}

    def start(self, now: float) -> None:
        self.closed, self.tripped = True, False
        self._set("check_word", 0x5AA5)
        self._publish()

    def on_write(self, event: WriteEvent) -> None:
        if event.point == "breaker_command":
            if event.value == "open":
                self.closed = False
            elif event.value == "close":
                self.closed, self.tripped = True, False
            self._publish()

    def stimulus_overcurrent(self) -> None:
        self.closed, self.tripped = False, True
        self._publish()

    def stimulus_load(self, amps: float = 42.0) -> None:
        """The feeder draws this current per phase (an overload the protection has not tripped on yet)."""
        if not isinstance(amps, (int, float)) or isinstance(amps, bool) or not 0 <= amps <= 10_000:
            raise ValueError(f"load: amps must be a number from 0 to 10000, got {amps!r}")
        self.options["load_a"] = float(amps)
        self._publish()

    def tick(self, now: float, dt: float) -> None:
        self._publish()

    def _publish(self) -> None:
        status = (1 if self.closed else 2) | (4 if self.tripped else 0) | 8
        self._set("status_1", status)
        load = self.options["load_a"]
        for phase in ("l1", "l2", "l3"):
            current = max(0.0, load + self.rng.gauss(0, 0.3)) if self.closed else 0.0
            self._set(f"current_{phase}", round(current, 1))
        self._set("current_residual", round(abs(self.rng.gauss(0, 0.1)), 1) if self.closed else 0.0)


class WaterLevel(Behaviour):
    """Level logger: the water rises with rain and falls back; pressure follows the depth."""

    name = "water-level"
    stimuli = ("rain",)
    defaults: ClassVar[dict[str, Any]] = {"base_level_m": 0.8, "metres_per_mm_h": 0.03, "response_s": 60.0}

    def start(self, now: float) -> None:
        self.level = float(self.options["base_level_m"])

    def stimulus_rain(self, mm_per_h: float = 30.0) -> None:
        self.env.rain_mm_h = float(mm_per_h)

    def tick(self, now: float, dt: float) -> None:
        o = self.options
        steady = o["base_level_m"] + o["metres_per_mm_h"] * self.env.rain_mm_h
        self.level += (steady - self.level) * min(1.0, dt / o["response_s"])
        self._set("pressure", round(self.level * 98.0665, 1))  # mbar of water above the sensor
        self._set("temperature", round(11.5 + 0.3 * math.sin(now / 300) + self.rng.gauss(0, 0.02), 2))


class FlowMeter(Behaviour):
    """Flow meter: flow grows with rain; totals only increase."""

    name = "flow"
    stimuli = ("rain",)
    defaults: ClassVar[dict[str, Any]] = {"base_flow_m3_s": 0.04, "per_mm_h": 0.05}

    def start(self, now: float) -> None:
        self.forward = float(self.device.get("total_forward")) if self.device.has("total_forward") else 0.0
        self.litres = float(self.device.get("resettable_forward")) if self.device.has("resettable_forward") else 0.0

    def stimulus_rain(self, mm_per_h: float = 30.0) -> None:
        self.env.rain_mm_h = float(mm_per_h)

    def tick(self, now: float, dt: float) -> None:
        o = self.options
        flow = max(0.0, o["base_flow_m3_s"] * (1 + o["per_mm_h"] * self.env.rain_mm_h) + self.rng.gauss(0, 0.0005))
        self.forward += flow * dt
        self.litres += flow * dt * 1000
        self._set("flow", round(flow, 5))
        self._set("total_forward", round(self.forward, 6))
        self._set("resettable_forward", int(self.litres) % (1 << 32))


BEHAVIOURS: dict[str, type[Behaviour]] = {
    cls.name: cls for cls in (Static, EnergyMeter, LampController, ProtectionRelay, WaterLevel, FlowMeter)
}
