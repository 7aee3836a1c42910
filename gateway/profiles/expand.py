"""Turn a profile (plus a device's parameters and overrides) into a flat, checked list of points.

Defaults are merged into each point, repeat blocks are unrolled, and every rule that
a schema cannot express is checked: the neutral ones here (a writable number needs
limits, an enum needs its names, select-before-operate needs a writable point, ...),
the protocol's own by the protocol (a Modbus table and address, overlaps, a node's
key). Problems come back as `Issue`s with the key path that caused them, so callers
can point at the exact line of the file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.common.problems import KeyPath, did_you_mean, format_path
from gateway.points.types import NUMERIC_TYPES, DataType, Value
from gateway.profiles.expr import ExpressionError, evaluate
from gateway.profiles.model import MAX_REPEAT, Access, PointFields, Profile
from gateway.south.driver import Issue, ProfileProtocol, protocol

MAX_POINTS = 20_000  # a device with more is a mistake in the profile, not a device

__all__ = ["Issue", "PointSpec", "ResolvedProfile", "expand", "resolve_parameters"]


@dataclass(frozen=True, slots=True)
class PointSpec:
    """One point, fully resolved: the neutral fields everything uses, and its protocol's `attributes`."""

    name: str
    dtype: DataType
    access: Access
    unit: str | None
    min: float | None
    max: float | None
    plausible: tuple[float, float] | None  # readings outside are errors ('implausible'), not values
    scale: float | None
    offset: float | None
    decimals: int | None
    enum: Mapping[int, str] | None
    bits: Mapping[int, str] | None
    device_class: str | None
    state_class: str | None
    control: str | None
    category: str | None  # config (an installation setting) | diagnostic (a status or check word) | None
    entity: str | None  # light: a dimmable lamp level, for Home Assistant
    description: str | None
    initial: Value | None
    group: str | None
    origin: KeyPath
    attributes: Any  # where the point is for its protocol: a Modbus table, address and codec; a node's key

    @property
    def sbo(self) -> bool:
        return self.control == "sbo"

    def implausible(self, value: Value) -> bool:
        """A reading outside the profile's plausible range (never for points without one, nor non-numbers)."""
        if self.plausible is None or isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return not self.plausible[0] <= value <= self.plausible[1]

    def check_write(self, value: Value) -> None:
        """Raise PointValueError when the protocol cannot carry `value` (a register's range, say)."""
        check = getattr(self.attributes, "check_write", None)
        if check is not None:
            check(value)


@dataclass(frozen=True, slots=True)
class ResolvedProfile:
    profile: Profile
    params: Mapping[str, int]
    points: tuple[PointSpec, ...]
    limits: Any  # the protocol's device limits (Modbus: registers per read, gaps, forbidden ranges, pause)

    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def protocol(self) -> ProfileProtocol:
        found = protocol(self.profile.protocol)
        assert found is not None, self.profile.protocol
        return found

    def point(self, name: str) -> PointSpec | None:
        for p in self.points:
            if p.name == name:
                return p
        return None


def resolve_parameters(profile: Profile, given: Mapping[str, int]) -> tuple[dict[str, int], list[Issue]]:
    issues: list[Issue] = []
    values = {name: p.default for name, p in profile.parameters.items()}
    for name, value in given.items():
        spec = profile.parameters.get(name)
        if spec is None:
            known = ", ".join(profile.parameters) or "none"
            issues.append(
                Issue(
                    ("params", name), f"profile '{profile.name}' has no parameter '{name}' (has: {known})", True, True
                )
            )
            continue
        if (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max):
            issues.append(Issue(("params", name), f"{value} is outside {spec.min}..{spec.max}", True))
            continue
        values[name] = value
    return values, issues


def expand(
    profile: Profile,
    params: Mapping[str, int] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[ResolvedProfile, list[Issue]]:
    """All points of `profile` for one device, with the problems found on the way."""
    found = protocol(profile.protocol)
    assert found is not None, f"profile {profile.name} was validated for an unknown protocol {profile.protocol}"
    values, issues = resolve_parameters(profile, params or {})
    overrides = overrides or {}
    points: list[PointSpec] = []
    seen: dict[str, KeyPath] = {}
    defaults = profile.defaults.model_dump(exclude_unset=True)
    dumped: dict[int, dict[str, Any]] = {}  # a repeat block's template serves every index: dump it once
    for name, definition, origin, base in _definitions(profile, values, issues):
        if len(seen) >= MAX_POINTS:
            issues.append(Issue(origin, f"a profile has at most {MAX_POINTS} points; this one generates more"))
            break
        if name in seen:
            issues.append(Issue(origin, f"point name '{name}' is already used at {format_path(seen[name])}", key=True))
            continue
        seen[name] = origin
        # Unset keys inherit from defaults; an explicit null clears a default.
        override = overrides.get(name, {})
        own = dumped.get(id(definition))
        if own is None:
            own = dumped[id(definition)] = definition.model_dump(exclude_unset=True)
        merged = {**defaults, **own, **override}
        fields = {k: v for k, v in merged.items() if v is not None}
        spec = _build_point(found, profile, name, fields, origin, base, issues, frozenset(override))
        if spec is not None:
            points.append(spec)
    for name in overrides:
        if name not in seen:
            issues.append(Issue(("overrides", name), f"profile '{profile.name}' has no point '{name}'", True, True))
    issues.extend(found.check_points(profile, points))
    for i, alarm in enumerate(profile.alarms):
        if "*" not in alarm.point and alarm.point not in seen:
            issues.append(Issue(("alarms", i, "point"), f"no point '{alarm.point}'{did_you_mean(alarm.point, seen)}"))
    resolved = ResolvedProfile(profile, values, tuple(points), found.limits(profile))
    return resolved, _dedupe(issues)


def _definitions(
    profile: Profile, values: Mapping[str, int], issues: list[Issue]
) -> Iterator[tuple[str, PointFields, KeyPath, int]]:
    try:
        offset = evaluate(profile.address_base, values)
    except ExpressionError as exc:
        issues.append(Issue(("address_base",), str(exc)))
        return
    for name, definition in profile.points.items():
        yield name, definition, ("points", name), offset
    for b, block in enumerate(profile.repeat):
        try:
            count = evaluate(block.count, values)
            base = offset + evaluate(block.base, values)
        except ExpressionError as exc:
            issues.append(Issue(("repeat", b), str(exc)))
            continue
        if not 0 <= count <= MAX_REPEAT:
            issues.append(Issue(("repeat", b, "count"), f"count must be between 0 and {MAX_REPEAT}, got {count}"))
            continue
        token = "{" + block.index + "}"
        templates: list[tuple[str, PointFields]] = []
        for template, definition in block.points.items():
            if token in template:
                templates.append((template, definition))
            else:
                message = f"names in a repeat block must contain {token}"
                issues.append(Issue(("repeat", b, "points", template), message, key=True))
        # Index outermost, so each ballast's points stay together in listings and plans.
        for index in range(block.start, block.start + count):
            for template, definition in templates:
                origin: KeyPath = ("repeat", b, "points", template)
                yield template.replace(token, str(index)), definition, origin, base + block.stride * index


def _build_point(
    found: ProfileProtocol,
    profile: Profile,
    name: str,
    f: dict[str, Any],
    origin: KeyPath,
    base: int,
    issues: list[Issue],
    overridden: frozenset[str],
) -> PointSpec | None:
    before = len(issues)

    def bad(field: str | None, message: str) -> None:
        if field in overridden:
            issues.append(Issue(("overrides", name, field), message, override=True))
        else:
            # A missing field is reported at the point's name; a wrong one at its value.
            issues.append(Issue((*origin, field) if field else origin, message, key=field is None or field not in f))

    group = f.get("group")
    if group is not None and group not in profile.poll_groups:
        known = ", ".join(profile.poll_groups) or "none defined"
        bad("group", f"unknown poll group '{group}' (poll_groups: {known})")
    dtype = DataType(f["type"]) if f.get("type") else found.default_type(f)
    if dtype not in found.types:
        bad("type", f"{found.name} points cannot be {dtype.value}")
    access = Access(f.get("access", "r"))
    _neutral_checks(dtype, access, f, bad)
    if len(issues) > before:
        return None
    attributes = found.attributes(profile, name, {**f, "type": dtype.value}, base, bad)
    if attributes is None or len(issues) > before:
        return None
    return PointSpec(
        name=name,
        dtype=dtype,
        access=access,
        unit=f.get("unit"),
        min=f.get("min"),
        max=f.get("max"),
        plausible=tuple(f["plausible"]) if f.get("plausible") is not None else None,
        scale=f.get("scale"),
        offset=f.get("offset"),
        decimals=f.get("decimals"),
        enum=f.get("enum"),
        bits=f.get("bits"),
        device_class=f.get("device_class"),
        state_class=f.get("state_class"),
        control=f.get("control"),
        category=f.get("category"),
        entity=f.get("entity"),
        description=f.get("description"),
        initial=f.get("initial"),
        group=group,
        origin=origin,
        attributes=attributes,
    )


def _neutral_checks(dtype: DataType, access: Access, f: dict[str, Any], bad: Any) -> None:
    if dtype is DataType.ENUM and not f.get("enum"):
        bad("enum", "enum points need an enum mapping (raw value: name)")
    if f.get("enum") and dtype is not DataType.ENUM:
        bad("enum", f"an enum mapping needs type enum, not {dtype.value}")
    for field in ("scale", "offset", "decimals"):
        if field in f and dtype not in NUMERIC_TYPES:
            bad(field, f"{field} applies to numeric types only, not {dtype.value}")
    lo, hi = f.get("min"), f.get("max")
    if lo is not None and hi is not None and lo > hi:
        bad("min", f"min {lo} is greater than max {hi}")
    plausible = f.get("plausible")
    if plausible is not None:
        if dtype not in NUMERIC_TYPES:
            bad("plausible", f"a plausible range applies to numeric types only, not {dtype.value}")
        elif plausible[0] >= plausible[1]:
            bad("plausible", f"plausible is [low, high] with low below high, got [{plausible[0]}, {plausible[1]}]")
    if access.writable and (dtype in NUMERIC_TYPES or dtype is DataType.BITFIELD) and (lo is None or hi is None):
        bad("access", f"writable point needs min and max (access is {access.value})")
    if f.get("entity") == "light" and (not access.writable or dtype not in NUMERIC_TYPES or hi is None):
        bad("entity", "a light is a writable number with a max (its full brightness)")
    if f.get("control") == "sbo" and not access.writable:
        bad("control", "select-before-operate (control: sbo) needs a writable point")


def _dedupe(issues: list[Issue]) -> list[Issue]:
    """Repeat blocks produce one issue per index; keep the first per location."""
    seen: set[tuple[KeyPath, bool]] = set()
    out: list[Issue] = []
    for issue in issues:
        key = (issue.path, issue.override)
        if key not in seen:
            seen.add(key)
            out.append(issue)
    return out
