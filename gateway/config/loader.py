"""Load a gateway configuration file and check everything it refers to.

`load_config` either returns a `LoadedConfig` whose devices are resolved against
their profiles, or raises ConfigError listing every problem found (in the
configuration and in the profiles it uses), each with file, line and key.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from gateway.common.problems import ConfigError, KeyPath, Problem, did_you_mean, format_path
from gateway.common.validate import problems_from, validate
from gateway.common.yamlsource import YamlSource, load_yaml
from gateway.config.model import AnyLink, DeviceConfig, GatewayConfig, GatewayInfo, NodeConfig
from gateway.profiles.expand import Issue, ResolvedProfile, expand
from gateway.profiles.model import Profile
from gateway.profiles.registry import ProfileRegistry
from gateway.south.driver import LinkDriver, ProfileProtocol, link_driver, protocol


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    path: Path
    config: GatewayConfig
    source: YamlSource
    registry: ProfileRegistry
    devices: dict[str, ResolvedProfile]  # device id -> its points
    nodes: dict[str, ResolvedProfile]  # node id -> its points

    @property
    def point_count(self) -> int:
        return sum(len(r.points) for r in self.devices.values())


def load_config(path: Path) -> LoadedConfig:
    source = load_yaml(path)
    try:
        config = validate(source, GatewayConfig)
    except ConfigError as exc:
        # Still cross-check what did validate, so one run shows every problem.
        partial = _salvage(source.data, path.parent)
        if partial is None:
            raise
        checker = _Checker(source, ProfileRegistry(partial.profile_dirs))
        checker.check_ids(partial)
        raw_links = source.data.get("links") if isinstance(source.data, dict) else None
        known_links = (
            {str(x.get("id")) for x in raw_links if isinstance(x, dict)} if isinstance(raw_links, list) else set()
        )
        checker.devices(partial, known_links)
        checker.nodes(partial)
        raise ConfigError([*exc.problems, *checker.problems]) from None
    config = _anchor_paths(config, path.parent)
    registry = ProfileRegistry(config.profile_dirs)
    checker = _Checker(source, registry)
    checker.check_ids(config)
    devices = checker.devices(config)
    nodes = checker.nodes(config)
    checker.lighting(config, devices, nodes)
    checker.alarms(config, devices, nodes)
    checker.indicators(config, {**nodes, **devices})
    if checker.problems:
        raise ConfigError(checker.problems)
    return LoadedConfig(path, config, source, registry, devices, nodes)


def profile_dir_problems(loaded: LoadedConfig) -> list[Problem]:
    """Profile directories this machine lacks or cannot read (a typo there would hide its profiles)."""
    problems = []
    for i, directory in enumerate(loaded.config.profile_dirs):
        if not directory.exists():
            why = f"directory {directory} does not exist"
        elif not directory.is_dir():
            why = f"{directory} is not a directory"
        elif not os.access(directory, os.R_OK | os.X_OK):
            why = f"directory {directory} cannot be read by this user"
        else:
            continue
        problems.append(loaded.source.problem(("profile_dirs", i), why))
    return problems


def _salvage(data: object, base: Path) -> GatewayConfig | None:
    """A configuration made of the entries that validate on their own (the others are reported already)."""
    if not isinstance(data, dict):
        return None

    def valid(adapter: TypeAdapter[Any], items: object) -> list[Any]:
        out = []
        for item in items if isinstance(items, list) else []:
            try:
                out.append(adapter.validate_python(item))
            except ValidationError:
                out.append(None)  # keeps indices aligned with the file
        return out

    try:
        dirs = TypeAdapter(list[Path]).validate_python(data.get("profile_dirs", []))
    except ValidationError:
        dirs = []
    links = [x for x in valid(TypeAdapter(AnyLink), data.get("links")) if x is not None]
    partial = GatewayConfig.model_construct(
        gateway=GatewayInfo.model_construct(id=""),
        profile_dirs=dirs,
        links=links,
        devices=valid(TypeAdapter(DeviceConfig), data.get("devices")),
        nodes=valid(TypeAdapter(NodeConfig), data.get("nodes")),
    )
    return _anchor_paths(partial, base)


def _anchor_paths(config: GatewayConfig, base: Path) -> GatewayConfig:
    """Relative paths in the file are relative to the file, not to wherever the gateway was started."""

    def anchor(p: Path) -> Path:
        return p if p.is_absolute() else (base / p)

    mqtt = config.mqtt
    tls = mqtt.tls
    if tls is not None:
        tls = tls.model_copy(update={k: anchor(v) for k in ("ca", "cert", "key") if (v := getattr(tls, k)) is not None})
    password_file = anchor(mqtt.password_file) if mqtt.password_file else None
    web: dict[str, Any] = {}
    for name in ("metrics", "dashboard"):
        section = getattr(config, name)
        if section is None:
            continue
        update: dict[str, Any] = {}
        if section.tls is not None:
            update["tls"] = section.tls.model_copy(
                update={"cert": anchor(section.tls.cert), "key": anchor(section.tls.key)}
            )
        if name == "dashboard":
            update["users"] = anchor(section.users)
        web[name] = section.model_copy(update=update)
    return config.model_copy(
        update={
            "profile_dirs": [anchor(p) for p in config.profile_dirs],
            "store": config.store.model_copy(update={"path": anchor(config.store.path)}),
            "mqtt": mqtt.model_copy(update={"tls": tls, "password_file": password_file}),
            **web,
        }
    )


class _Checker:
    """Cross-reference checks a schema cannot express; collects problems instead of stopping at one."""

    def __init__(self, source: YamlSource, registry: ProfileRegistry) -> None:
        self.source = source
        self.registry = registry
        self.problems: list[Problem] = []
        self._bad_profiles: set[str] = set()
        self._resolved: dict[tuple[str, str, str], tuple[ResolvedProfile, list[Issue]]] = {}

    def add(self, path: KeyPath, message: str) -> None:
        self.problems.append(self.source.problem(path, message))

    def check_ids(self, config: GatewayConfig) -> None:
        self._unique("links", (link.id for link in config.links))
        # Devices and nodes share the topic namespace under <base>/.
        owners: dict[str, KeyPath] = {}
        sections: tuple[tuple[str, Sequence[DeviceConfig | NodeConfig | None]], ...] = (
            ("devices", config.devices),
            ("nodes", config.nodes),
        )
        for section, items in sections:
            for i, item in enumerate(items):
                if item is None:
                    continue
                if item.id in owners:
                    self.add(
                        (section, i, "id"), f"duplicate id '{item.id}' (first used at {format_path(owners[item.id])})"
                    )
                else:
                    owners[item.id] = (section, i)

    def _unique(self, section: str, ids: Iterable[str]) -> None:
        first: dict[str, int] = {}
        for i, ident in enumerate(ids):
            if ident in first:
                self.add((section, i, "id"), f"duplicate id '{ident}' (first used at {section}[{first[ident]}])")
            else:
                first[ident] = i

    def devices(self, config: GatewayConfig, link_ids: set[str] | None = None) -> dict[str, ResolvedProfile]:
        links = {link.id: link for link in config.links}
        names = link_ids if link_ids is not None else set(links)
        addresses: dict[tuple[str, str], int] = {}
        out: dict[str, ResolvedProfile] = {}
        for i, device in enumerate(config.devices):
            if device is None:
                continue
            driver: LinkDriver | None = None
            if device.link not in names:
                known = ", ".join(sorted(names)) or "none defined"
                hint = did_you_mean(device.link, names)
                self.add(("devices", i, "link"), f"unknown link '{device.link}'{hint or f' (links: {known})'}")
            elif device.link in links:
                driver = link_driver(links[device.link])
                address, why = driver.address(device)
                field = "unit" if device.unit is not None else "address"
                if why is not None:
                    self.add(("devices", i), why)
                elif device.enabled:
                    key = (device.link, repr(address))
                    if key in addresses:
                        first = config.devices[addresses[key]]
                        owner = first.id if first else "?"
                        used = f"{field} {address} on link '{device.link}' is already used by '{owner}'"
                        self.add(("devices", i, field), used)
                    else:
                        addresses[key] = i
            resolved = self._resolve(("devices", i), device.profile, "devices", device, driver)
            if resolved is not None:
                out[device.id] = resolved
        return out

    def lighting(
        self, config: GatewayConfig, devices: dict[str, ResolvedProfile], nodes: dict[str, ResolvedProfile]
    ) -> None:
        """Every lighting target writes a point that takes a level; every sensor it listens to is there."""
        if config.lighting is None:
            return
        for i, target in enumerate(config.lighting.targets):
            at: KeyPath = ("lighting", "targets", i)
            resolved = devices.get(target.device)
            if resolved is None:
                self.add((*at, "device"), f"unknown device '{target.device}'{did_you_mean(target.device, devices)}")
            else:
                point = resolved.point(target.point)
                names = [p.name for p in resolved.points if p.access.writable]
                if point is None or not point.access.writable:
                    self.add((*at, "point"), f"'{target.point}' is not a writable point of {target.device}"
                             f"{did_you_mean(target.point, names)}")  # fmt: skip
                elif (point.max is not None and point.max < 100) or (point.min is not None and point.min > 0):
                    self.add(
                        (*at, "point"), f"{target.device}.{target.point} takes {point.min}..{point.max}, not 0..100 %"
                    )
            for sensor in ("photocell", "motion"):
                watched = getattr(target, sensor)
                if watched is None:
                    continue
                source = devices.get(watched.device) or nodes.get(watched.device)
                if source is None:
                    known = [*devices, *nodes]
                    self.add(
                        (*at, sensor, "device"),
                        f"unknown device or node '{watched.device}'{did_you_mean(watched.device, known)}",
                    )
                elif source.point(watched.point) is None:
                    self.add((*at, sensor, "point"), f"{watched.device} has no point '{watched.point}'")

    def alarms(
        self, config: GatewayConfig, devices: dict[str, ResolvedProfile], nodes: dict[str, ResolvedProfile]
    ) -> None:
        """Every alarm watches a device or node that is there, and a point it has; ids are unique."""
        seen: set[str] = set()
        for i, rule in enumerate(config.alarms):
            at: KeyPath = ("alarms", i)
            if rule.id in seen:
                self.add((*at, "id"), f"alarm id '{rule.id}' is used twice")
            seen.add(rule.id)
            source = devices.get(rule.device) or nodes.get(rule.device)
            if source is None:
                known = [*devices, *nodes]
                self.add((*at, "device"), f"unknown device or node '{rule.device}'{did_you_mean(rule.device, known)}")
            elif rule.point is not None and source.point(rule.point) is None:
                names = [p.name for p in source.points]
                self.add((*at, "point"), f"{rule.device} has no point '{rule.point}'{did_you_mean(rule.point, names)}")
            targets = {t.id for t in config.lighting.targets} if config.lighting is not None else set()
            for key, target in (("day_burner", rule.day_burner), ("power", rule.power.target if rule.power else None)):
                if target is not None and target not in targets:
                    where = (*at, key) if key == "day_burner" else (*at, key, "target")
                    self.add(where, f"'{target}' is not a lighting target{did_you_mean(target, targets)}")

    def indicators(self, config: GatewayConfig, devices: dict[str, ResolvedProfile]) -> None:
        """Indicator groups are lighting targets; feeder meters are devices (or nodes) with that counter."""
        if config.indicators is None:
            return
        targets = {t.id for t in config.lighting.targets} if config.lighting is not None else set()
        for name, group in config.indicators.groups.items():
            if name not in targets:
                self.add(
                    ("indicators", "groups", name), f"'{name}' is not a lighting target{did_you_mean(name, targets)}"
                )
            if group.failures is not None:
                at: KeyPath = ("indicators", "groups", name, "failures")
                resolved = devices.get(group.failures.device)
                if resolved is None:
                    device = group.failures.device
                    self.add((*at, "device"), f"unknown device '{device}'{did_you_mean(device, devices)}")
                elif not any(fnmatch.fnmatchcase(p.name, group.failures.points) for p in resolved.points):
                    pattern = group.failures.points
                    self.add((*at, "points"), f"{group.failures.device} has no point matching '{pattern}'")
        watched = [("levels", n, w.device, w.point) for n, w in config.indicators.levels.items()]
        watched += [("feeders", n, m.device, m.point) for n, m in config.indicators.feeders.items()]
        for section, name, device, point in watched:
            at = ("indicators", section, name)
            resolved = devices.get(device)
            if resolved is None:
                self.add((*at, "device"), f"unknown device '{device}'{did_you_mean(device, devices)}")
            elif resolved.point(point) is None:
                self.add((*at, "point"), f"{device} has no point '{point}'")

    def nodes(self, config: GatewayConfig) -> dict[str, ResolvedProfile]:
        out: dict[str, ResolvedProfile] = {}
        for i, node in enumerate(config.nodes):
            if node is None:
                continue
            resolved = self._resolve(("nodes", i), node.profile, "nodes", None, None)
            if resolved is not None:
                out[node.id] = resolved
        return out

    def _resolve(
        self, at: KeyPath, name: str, section: str, device: DeviceConfig | None, driver: LinkDriver | None
    ) -> ResolvedProfile | None:
        profile = self._profile(at, name)
        if profile is None:
            return None
        found = protocol(profile.protocol)
        assert found is not None, profile.protocol  # the profile validated, so its protocol is registered
        if found.section != section:
            self.add(
                (*at, "profile"), f"profile '{name}' describes a {found.name} device; list it under {found.section}"
            )
            return None
        if device is not None and driver is not None and getattr(driver, "name", None) != found.name:
            self.add(
                (*at, "profile"),
                f"profile '{name}' describes a {found.name} device, but link '{device.link}' speaks "
                f"{getattr(driver, 'name', 'another protocol')}",
            )
            return None
        overrides = self._overrides(at, device, found) if device else {}
        if overrides is None:
            return None
        params = device.params if device else {}
        # Devices of one model with the same settings share one resolved profile (points and codecs):
        # two hundred identical meters cost the memory of one.
        key = (name, json.dumps(params, sort_keys=True), json.dumps(overrides, sort_keys=True, default=str))
        if key not in self._resolved:
            self._resolved[key] = expand(profile, params, overrides)
        resolved, issues = self._resolved[key]
        for issue in issues:
            if issue.override:
                self.problems.append(self.source.problem((*at, *issue.path), issue.message, key=issue.key))
            else:  # the profile loaded cleanly with its defaults, so the device's params caused this
                self.add(
                    (*at, "params"), f"with these params, profile '{name}' {format_path(issue.path)}: {issue.message}"
                )
        if device is not None and device.points is not None:
            resolved = self._select(at, device.points, resolved)
        if device is not None:
            self._device_extras(at, device, profile, resolved)
        return resolved

    def _device_extras(self, at: KeyPath, device: DeviceConfig, profile: Profile, resolved: ResolvedProfile) -> None:
        for group in device.poll_groups:
            if group not in profile.poll_groups:
                known = ", ".join(profile.poll_groups) or "none"
                self.problems.append(
                    self.source.problem(
                        (*at, "poll_groups", group),
                        f"profile '{profile.name}' has no poll group '{group}' (groups: {known})",
                        key=True,
                    )
                )
        names = {p.name for p in resolved.points}
        for point in device.report.points:
            if point not in names:
                self.problems.append(
                    self.source.problem(
                        (*at, "report", "points", point), f"no point '{point}'{did_you_mean(point, names)}", key=True
                    )
                )

    def _profile(self, at: KeyPath, name: str) -> Profile | None:
        if self.registry.path(name) is None:
            self.add((*at, "profile"), f"unknown profile '{name}'{did_you_mean(name, self.registry.names())}")
            return None
        if name in self._bad_profiles:
            return None
        try:
            return self.registry.load(name)[0]
        except ConfigError as exc:
            self._bad_profiles.add(name)
            self.problems.extend(exc.problems)
            self.add((*at, "profile"), f"profile '{name}' has errors (listed above)")
            return None

    def _select(self, at: KeyPath, wanted: Sequence[str], resolved: ResolvedProfile) -> ResolvedProfile:
        names = {p.name for p in resolved.points}
        for j, point in enumerate(wanted):
            if point not in names:
                self.add(
                    (*at, "points", j), f"profile '{resolved.name}' has no point '{point}'{did_you_mean(point, names)}"
                )
        keep = tuple(p for p in resolved.points if p.name in set(wanted))
        return ResolvedProfile(resolved.profile, resolved.params, keep, resolved.limits)

    def _overrides(self, at: KeyPath, device: DeviceConfig, found: ProfileProtocol) -> dict[str, dict[str, Any]] | None:
        """The device's overrides, each checked against the fields its protocol's points have."""
        out: dict[str, dict[str, Any]] = {}
        ok = True
        for point, fields in device.overrides.items():
            try:
                out[point] = found.point_fields.model_validate(fields).model_dump(exclude_unset=True)
            except ValidationError as exc:
                ok = False
                self.problems.extend(
                    problems_from(self.source, found.point_fields, exc.errors(), (*at, "overrides", point))
                )
        return out if ok else None
