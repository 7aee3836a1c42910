"""Scenario files: an emulated site (links, devices, behaviours), a timeline of faults and stimuli,
and expectations on what the gateway publishes.

Loaded with the same located error messages as gateway configurations.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from gateway.common.problems import ConfigError, KeyPath, Problem, did_you_mean
from gateway.common.types import Duration, Identifier, Strict
from gateway.common.validate import validate
from gateway.common.yamlsource import YamlSource, load_yaml
from gateway.edge.alarms.rules import AlarmRule
from gateway.edge.indicators.settings import IndicatorSettings
from gateway.edge.lighting.settings import LightingSettings
from gateway.profiles.expand import ResolvedProfile, expand
from gateway.profiles.registry import ProfileRegistry
from hil.modbus.behaviours import BEHAVIOURS
from hil.modbus.device import DeviceFaults

Scalar = bool | int | float | str


class _EmuLink(Strict):
    id: Identifier
    hardware: str | None = Field(
        None, description="use real hardware instead of emulating: a serial device, or host:port for TCP"
    )


class EmuRtuLink(_EmuLink):
    type: Literal["modbus-rtu"]
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    wire_timing: bool = Field(True, description="bytes take their real time on the wire")


class EmuTcpLink(_EmuLink):
    type: Literal["modbus-tcp", "modbus-rtu-tcp"]
    port: int = Field(0, ge=0, le=65535, description="0: any free loopback port")


class EmuMeterLink(_EmuLink):
    """A serial line of IEC 62056-21 meters, an M-Bus segment, or a port with an ASCII sensor."""

    type: Literal["iec62056-serial", "mbus-serial", "ascii-serial"]
    baudrate: int | None = Field(None, description="default: 300 (IEC 62056-21 sign-on), 2400 (M-Bus), 9600 (ASCII)")
    parity: Literal["N", "E", "O"] | None = None
    bytesize: Literal[7, 8] | None = None
    wire_timing: bool = Field(True, description="bytes take their real time on the wire")


EmuLink = Annotated[EmuRtuLink | EmuTcpLink | EmuMeterLink, Field(discriminator="type")]


class EmuDevice(Strict):
    id: Identifier
    profile: str
    link: str
    unit: int | None = Field(None, ge=0, le=255, description="Modbus devices: the unit id")
    address: int | str | None = Field(
        None, description="meters: IEC 62056-21 device address, M-Bus primary or secondary address"
    )
    behaviour: str | None = Field(None, description="behaviour model; default: the profile's emulator")
    options: dict[str, Any] = Field(default_factory=dict, description="behaviour options")
    params: dict[str, int] = Field(default_factory=dict)
    values: dict[str, Scalar] = Field(default_factory=dict, description="starting values of points")
    faults: dict[str, Any] = Field(default_factory=dict, description="faults active from the start")
    strict: bool = Field(False, description="exception 02 for registers no point uses")
    poll: Duration = Field(1.0, description="poll interval in the generated gateway configuration")


DEFAULT_NODE_SENSORS: list[dict[str, Any]] = [
    {"type": "bh1750"},
    {"type": "pir", "pin": 4},
    {"type": "battery", "pin": 34},
]
DEFAULT_NODE_HARDWARE: dict[str, Any] = {"i2c": {"35": {"read": "0190"}}, "pins": {"4": 0}, "adc": {"34": 40000}}


class EmuNode(Strict):
    """An ESP32 node: the real firmware on the MicroPython unix port, with scripted sensors."""

    id: Identifier
    profile: str = "esp32-pole-sensor"
    sensors: list[dict[str, Any]] = Field(default_factory=lambda: list(DEFAULT_NODE_SENSORS))
    hardware: dict[str, Any] = Field(
        default_factory=lambda: dict(DEFAULT_NODE_HARDWARE),
        description="fake hardware: i2c answers, pin levels, ADC readings, echo time",
    )
    config: dict[str, Any] = Field(default_factory=dict, description="config.json settings (interval, ...)")


class Step(Strict):
    """One timeline entry: at a time, do one thing to a device, a link or a node."""

    at: Duration
    device: str | None = None
    link: str | None = None
    node: str | None = None
    fault: dict[str, Any] | None = None
    clear: bool = False
    action: Literal["reboot", "drop", "refuse", "accept", "noise"] | None = None
    stimulus: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    set: dict[str, Scalar] | None = None
    wifi: Literal["on", "off"] | None = Field(None, description="nodes: cut or restore the WiFi")
    hardware: dict[str, Any] | None = Field(None, description="nodes: new fake hardware values")

    @model_validator(mode="after")
    def _one_thing(self) -> Step:
        things = ("fault", "action", "stimulus", "set", "wifi", "hardware")
        chosen = [k for k in things if getattr(self, k)] + (["clear"] if self.clear else [])
        if len(chosen) != 1:
            raise ValueError("each step does exactly one of: fault, clear, action, stimulus, set, wifi, hardware")
        if sum(x is not None for x in (self.device, self.link, self.node)) != 1:
            raise ValueError("each step names a device, a link or a node")
        if self.node is not None and chosen[0] not in ("wifi", "hardware", "action"):
            raise ValueError("node steps are wifi, hardware or action: reboot")
        return self


class Expectation(Strict):
    """What the gateway must publish within a time window: for a device (a point's value, its availability or
    health), a lighting target (its level in effect) or an alarm (listed active, or not)."""

    device: str | None = None
    lighting: str | None = Field(None, description="a lighting target: its level in effect is `value`")
    alarm: str | None = Field(None, description="an alarm id: listed active on <base>/alarms (`active: false`: not)")
    active: bool = True
    between: tuple[Duration, Duration] = Field(description="[from, to] seconds after the start")
    point: str | None = None
    value: Scalar | None = None
    tolerance: float = 0.0
    availability: Literal["online", "offline"] | None = None
    state: Literal["online", "degraded", "offline"] | None = Field(None, description="device health state")

    @model_validator(mode="after")
    def _what(self) -> Expectation:
        if sum(x is not None for x in (self.device, self.lighting, self.alarm)) != 1:
            raise ValueError("an expectation is about one of: device, lighting (a target), alarm")
        if self.lighting is not None and (not isinstance(self.value, int | float) or isinstance(self.value, bool)):
            raise ValueError("a lighting expectation gives the level as 'value'")
        if self.alarm is not None and not (self.value is self.availability is self.state is None):
            raise ValueError("an alarm expectation says only 'active' (true or false)")
        if self.device is not None:
            if sum(x is not None for x in (self.value, self.availability, self.state)) != 1:
                raise ValueError("an expectation checks one of: value (with point), availability, state")
            if self.value is not None and self.point is None:
                raise ValueError("a value expectation needs a point")
        if self.between[0] > self.between[1]:
            raise ValueError("between: the window ends before it starts")
        return self


class ScenarioClock(Strict):
    """The gateway's automation runs on simulated time: from `start`, `speed` times faster than real time. Every
    `at` and `between` of the scenario is then in simulated seconds; the emulated devices keep real time."""

    start: datetime = Field(description="ISO 8601 with its offset, e.g. 2026-06-27T21:00:00+02:00")
    speed: Annotated[float, Field(ge=1, le=10000)] = Field(60.0, description="simulated seconds per real second")

    @model_validator(mode="after")
    def _aware(self) -> ScenarioClock:
        if self.start.tzinfo is None:
            raise ValueError("start: give the time with its offset (+02:00) or Z")
        return self


class Scenario(Strict):
    name: Identifier
    description: str | None = None
    seed: int = 1
    duration: Duration | None = Field(None, description="how long `hil run` runs (default: last step + 10s)")
    profile_dirs: list[Path] = Field(default_factory=list)
    links: list[EmuLink] = Field(default_factory=list)
    devices: list[EmuDevice] = Field(default_factory=list)
    nodes: list[EmuNode] = Field(default_factory=list)
    timeline: list[Step] = Field(default_factory=list)
    expect: list[Expectation] = Field(default_factory=list)
    clock: ScenarioClock | None = None
    lighting: LightingSettings | None = Field(None, description="the gateway's lighting, as in its configuration")
    alarms: list[AlarmRule] = Field(default_factory=list, description="the gateway's alarm rules")
    indicators: IndicatorSettings | None = None


class LoadedScenario:
    def __init__(self, path: Path, scenario: Scenario, source: YamlSource, registry: ProfileRegistry) -> None:
        self.path, self.scenario, self.source, self.registry = path, scenario, source, registry
        self.resolved: dict[str, ResolvedProfile] = {}

    @property
    def run_for(self) -> float:
        if self.scenario.duration is not None:
            return self.scenario.duration
        last = max([s.at for s in self.scenario.timeline] + [e.between[1] for e in self.scenario.expect] + [0.0])
        return last + 10.0


def load_scenario(path: Path) -> LoadedScenario:
    source = load_yaml(path)
    scenario = validate(source, Scenario)
    dirs = [p if p.is_absolute() else path.parent / p for p in scenario.profile_dirs]
    loaded = LoadedScenario(path, scenario, source, ProfileRegistry(dirs))
    problems = _check(loaded)
    if problems:
        raise ConfigError(problems)
    return loaded


def _check(loaded: LoadedScenario) -> list[Problem]:
    sc, src, registry = loaded.scenario, loaded.source, loaded.registry
    problems: list[Problem] = []

    def bad(path: KeyPath, message: str) -> None:
        problems.append(src.problem(path, message))

    links = {link.id: link for link in sc.links}
    devices = {d.id: d for d in sc.devices}
    units: set[tuple[str, Any]] = set()
    for i, d in enumerate(sc.devices):
        at: KeyPath = ("devices", i)
        link = links.get(d.link)
        metered = isinstance(link, EmuMeterLink)
        place = d.address if metered else d.unit
        if link is None:
            bad((*at, "link"), f"unknown link '{d.link}'{did_you_mean(d.link, links)}")
        elif not metered and d.unit is None:
            bad(at, f"missing required key 'unit' (the Modbus unit id on link '{d.link}')")
        elif (d.link, repr(place)) in units:
            bad(
                (*at, "address" if metered else "unit"),
                f"{'address' if metered else 'unit'} {place} on link '{d.link}' is already used",
            )
        units.add((d.link, repr(place)))
        if registry.path(d.profile) is None:
            bad((*at, "profile"), f"unknown profile '{d.profile}'{did_you_mean(d.profile, registry.names())}")
            continue
        try:
            profile = registry.load(d.profile)[0]
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        resolved, issues = expand(profile, d.params)
        for issue in issues:
            bad((*at, *issue.path), issue.message)
        loaded.resolved[d.id] = resolved
        if metered:
            assert isinstance(link, EmuMeterLink)
            _check_meter(d, link, profile.protocol, at, bad)
            for point in d.values:
                if point not in {p.name for p in resolved.points}:
                    bad(
                        (*at, "values", point),
                        f"no point '{point}'{did_you_mean(point, [p.name for p in resolved.points])}",
                    )
            continue
        if profile.protocol != "modbus":
            bad(
                (*at, "profile"),
                f"profile '{d.profile}' describes a {profile.protocol} device; "
                f"link '{d.link}' is {link.type if link else '?'}",
            )
            continue
        behaviour = d.behaviour or profile.emulator or "static"
        if behaviour not in BEHAVIOURS:
            where = (*at, "behaviour") if d.behaviour else (*at, "profile")
            bad(where, f"unknown behaviour '{behaviour}'{did_you_mean(behaviour, BEHAVIOURS)}")
        else:
            unknown = set(d.options) - set(BEHAVIOURS[behaviour].defaults)
            for key in sorted(unknown):
                bad((*at, "options", key), f"behaviour {behaviour} has no option '{key}'")
        names = {p.name for p in resolved.points}
        for point in d.values:
            if point not in names:
                bad((*at, "values", point), f"no point '{point}'{did_you_mean(point, names)}")
        try:
            DeviceFaults().update(d.faults)
        except ValueError as exc:
            bad((*at, "faults"), str(exc))
    node_ids = {n.id for n in sc.nodes}
    for i, n in enumerate(sc.nodes):
        if n.id in devices:
            bad(("nodes", i, "id"), f"id '{n.id}' is also a device")
        if registry.path(n.profile) is None:
            bad(("nodes", i, "profile"), f"unknown profile '{n.profile}'{did_you_mean(n.profile, registry.names())}")
        else:
            loaded.resolved[n.id] = expand(registry.load(n.profile)[0])[0]
    for i, step in enumerate(sc.timeline):
        if step.node is not None and step.node not in node_ids:
            bad(("timeline", i, "node"), f"unknown node '{step.node}'{did_you_mean(step.node, node_ids)}")
        if step.device is not None and step.device not in devices:
            bad(("timeline", i, "device"), f"unknown device '{step.device}'{did_you_mean(step.device, devices)}")
        if step.link is not None and step.link not in links:
            bad(("timeline", i, "link"), f"unknown link '{step.link}'{did_you_mean(step.link, links)}")
        if step.fault is not None:
            try:
                _faults_of(sc, links, step.device)().update(step.fault)
            except ValueError as exc:
                bad(("timeline", i, "fault"), str(exc))
    targets = {t.id for t in sc.lighting.targets} if sc.lighting is not None else set()
    for i, e in enumerate(sc.expect):
        if e.lighting is not None and e.lighting not in targets:
            known = did_you_mean(e.lighting, targets)
            bad(("expect", i, "lighting"), f"'{e.lighting}' is not a lighting target{known}")
        if e.device is None:
            continue
        if e.device not in devices and e.device not in node_ids:
            bad(("expect", i, "device"), f"unknown device '{e.device}'{did_you_mean(e.device, devices)}")
        elif e.point is not None and e.device in loaded.resolved:
            names = {p.name for p in loaded.resolved[e.device].points}
            if e.point not in names:
                bad(("expect", i, "point"), f"no point '{e.point}'{did_you_mean(e.point, names)}")
    return problems


def _faults_of(sc: Scenario, links: dict[str, Any], device_id: str | None) -> type[Any]:
    from hil.meters import FAULTS, LINE_TYPES

    for d in sc.devices:
        if d.id == device_id and isinstance(links.get(d.link), EmuMeterLink):
            return FAULTS[LINE_TYPES[links[d.link].type]]
    return DeviceFaults


def _check_meter(d: EmuDevice, link: EmuMeterLink, protocol: str, at: KeyPath, bad: Any) -> None:
    from hil.meters import FAULTS, LINE_TYPES, OPTIONS

    wanted = LINE_TYPES[link.type]
    if protocol != wanted:
        bad((*at, "profile"), f"profile '{d.profile}' describes a {protocol} device; link '{d.link}' carries {wanted}")
        return
    if d.unit is not None:
        bad((*at, "unit"), f"{wanted} devices have an address, not a unit")
    for key in sorted(set(d.options) - OPTIONS[wanted]):
        bad(
            (*at, "options", key),
            f"{wanted} emulators have no option '{key}' (they have: {', '.join(sorted(OPTIONS[wanted]))})",
        )
    try:
        FAULTS[wanted]().update(d.faults)
    except ValueError as exc:
        bad((*at, "faults"), str(exc))


METER_TIMEOUTS = {
    "iec62056-serial": {"timeout": 1.0, "recovery": 0.2},
    "mbus-serial": {"timeout": 0.3},
    "ascii-serial": {"timeout": 1.5},
}


def gateway_config(
    loaded: LoadedScenario, endpoints: dict[str, str], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A gateway configuration (as data) that polls this site: emulated links at their endpoints,
    hardware links at the hardware."""
    sc = loaded.scenario
    links: list[dict[str, Any]] = []
    for link in sc.links:
        where = link.hardware or endpoints[link.id]
        if isinstance(link, EmuMeterLink):
            from hil.meters import LINE_DEFAULTS

            base, parity, bytesize = LINE_DEFAULTS[link.type]
            links.append(
                {
                    "id": link.id,
                    "type": link.type,
                    "device": where,
                    "baudrate": link.baudrate or base,
                    "parity": link.parity or parity,
                    "bytesize": link.bytesize or bytesize,
                    **METER_TIMEOUTS[link.type],
                }
            )
        elif isinstance(link, EmuRtuLink):
            # The emulated line is a pty: it carries no parity bits (see docs/hil/serve.md).
            parity = link.parity if link.hardware else "N"
            links.append(
                {
                    "id": link.id,
                    "type": link.type,
                    "device": where,
                    "baudrate": link.baudrate,
                    "parity": parity,
                    "stopbits": link.stopbits,
                    "timeout": 0.5,
                }
            )
        else:
            host, _, port = where.rpartition(":")
            links.append({"id": link.id, "type": link.type, "host": host, "port": int(port), "timeout": 0.5})
    devices = [
        {
            "id": d.id,
            "profile": d.profile,
            "link": d.link,
            **({"unit": d.unit} if d.unit is not None else {}),
            **({"address": d.address} if d.address is not None else {}),
            "poll": d.poll,
            **({"params": d.params} if d.params else {}),
        }
        for d in sc.devices
    ]
    dirs = [str(p if p.is_absolute() else loaded.path.parent / p) for p in sc.profile_dirs]
    config: dict[str, Any] = {"gateway": {"id": sc.name}, "links": links, "devices": devices}
    if sc.nodes:
        config["nodes"] = [{"id": n.id, "profile": n.profile} for n in sc.nodes]
    if dirs:
        config["profile_dirs"] = dirs
    for section in ("lighting", "alarms", "indicators"):  # as written: the gateway reads them itself
        if section in loaded.source.data:
            config[section] = loaded.source.data[section]
    return {**config, **(extra or {})}
