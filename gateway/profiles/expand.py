"""Turn a profile (plus a device's parameters and overrides) into a flat, checked list of points.

Defaults are merged into each point, repeat blocks are unrolled, vendor
addresses become wire addresses, and every rule that a schema cannot express
(a writable point needs limits, points must not overlap, strings need a length,
...) is checked here. Problems come back as `Issue`s with the key path that
caused them, so callers can point at the exact line of the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.common.problems import KeyPath, format_path
from gateway.points.codec import (
    FLOAT_TYPES,
    INTEGER_TYPES,
    RAW_TYPES_FOR_BITFIELD,
    RAW_TYPES_FOR_ENUM,
    ByteOrder,
    Codec,
    CodecError,
    DataType,
    Value,
)
from gateway.profiles.expr import ExpressionError, evaluate
from gateway.profiles.model import MAX_REPEAT, Access, Limits, PointDefinition, Profile, Table

NUMERIC_TYPES = INTEGER_TYPES | FLOAT_TYPES
BIT_VIEWS = frozenset({DataType.BIT, DataType.BITFIELD})
MAX_POINTS = 20_000  # a device with more is a mistake in the profile, not a device
NODE_TYPES = NUMERIC_TYPES | {DataType.BOOL, DataType.STRING, DataType.ENUM}


@dataclass(frozen=True, slots=True)
class Issue:
    """A problem with one point or setting. `override` marks problems caused by a device's overrides."""

    path: KeyPath
    message: str
    override: bool = False
    key: bool = False  # about a name (point, parameter) rather than a value: point at the key


@dataclass(frozen=True, slots=True)
class PointSpec:
    """One point, fully resolved: everything the engine, emulators and publishers need."""

    name: str
    dtype: DataType
    access: Access
    table: Table | None  # None for node points
    address: int  # wire address (0-based); 0 for node points
    registers: int  # registers (or bits) read for this point
    codec: Codec | None
    unit: str | None
    min: float | None
    max: float | None
    enum: Mapping[int, str] | None
    bits: Mapping[int, str] | None
    device_class: str | None
    state_class: str | None
    control: str | None
    description: str | None
    initial: Value | None
    key: str | None
    group: str | None
    origin: KeyPath

    @property
    def end(self) -> int:
        """Last wire address the point occupies."""
        return self.address + self.registers - 1

    @property
    def sbo(self) -> bool:
        return self.control == "sbo"


@dataclass(frozen=True, slots=True)
class ResolvedProfile:
    profile: Profile
    params: Mapping[str, int]
    points: tuple[PointSpec, ...]
    limits: Limits
    forbidden: tuple[tuple[Table | None, int, int], ...]  # wire addresses

    @property
    def name(self) -> str:
        return self.profile.name

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
    values, issues = resolve_parameters(profile, params or {})
    overrides = overrides or {}
    limits = profile.limits
    shift = limits.addressing  # vendor address -> wire address
    points: list[PointSpec] = []
    seen: dict[str, KeyPath] = {}
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
        merged = {
            **profile.defaults.model_dump(exclude_unset=True),
            **definition.model_dump(exclude_unset=True),
            **override,
        }
        fields = {k: v for k, v in merged.items() if v is not None}
        spec = _build_point(profile, name, fields, origin, base, shift, issues, frozenset(override))
        if spec is not None:
            points.append(spec)
    for name in overrides:
        if name not in seen:
            issues.append(Issue(("overrides", name), f"profile '{profile.name}' has no point '{name}'", True, True))
    forbidden = tuple((r.table, r.start - shift, r.end - shift) for r in limits.forbidden)
    issues.extend(_overlaps(points))
    issues.extend(_forbidden_hits(points, forbidden, shift))
    resolved = ResolvedProfile(profile, values, tuple(points), limits, forbidden)
    return resolved, _dedupe(issues)


def _definitions(
    profile: Profile, values: Mapping[str, int], issues: list[Issue]
) -> Iterator[tuple[str, PointDefinition, KeyPath, int]]:
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
        templates: list[tuple[str, PointDefinition]] = []
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


Report = Callable[[str | None, str], None]


def _build_point(
    profile: Profile,
    name: str,
    f: dict[str, Any],
    origin: KeyPath,
    base: int,
    shift: int,
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
    if profile.protocol == "node":
        return _node_point(name, f, origin, bad, issues, before)
    spec = _modbus_point(name, f, origin, base, shift, bad, issues, before)
    if spec is not None and spec.table is not None:
        top = profile.limits.max_bits if spec.table.is_bits else profile.limits.max_registers
        if spec.registers > top:
            bad(None, f"point needs {spec.registers} registers but the device reads at most {top} at once")
            return None
    return spec


def _modbus_point(
    name: str, f: dict[str, Any], origin: KeyPath, base: int, shift: int, bad: Report, issues: list[Issue], before: int
) -> PointSpec | None:
    table = f.get("table")
    if table is None:
        bad(None, "missing table (set it on the point or in defaults)")
        return None
    table = Table(table)
    if "address" not in f:
        bad(None, "missing address")
        return None
    dtype = DataType(f.get("type") or ("bool" if table.is_bits else "uint16"))
    access = Access(f.get("access", "r"))
    if f.get("key") is not None:
        bad("key", "key is for node profiles; Modbus points are found by table and address")
    if table.is_bits and dtype is not DataType.BOOL:
        bad("type", f"{table.value} points are single bits: type must be bool, not {dtype.value}")
    if access.writable and not table.writable:
        bad(
            "access",
            f"{table.value} {'inputs' if table is Table.DISCRETE else 'registers'} are read-only; access must be r",
        )
    _common_checks(dtype, access, f, bad)
    address = base + f["address"] - shift
    if address < 0:
        bad("address", f"address {f['address']} is below 1 but the profile uses 1-based addressing")
    if len(issues) > before:
        return None
    codec = _make_codec(dtype, f, bad)
    registers = 1 if table.is_bits else (codec.registers if codec else 1)
    if address + registers - 1 > 65535:
        bad("address", f"point ends at {address + registers - 1 + shift}, beyond the last address 65535")
    if len(issues) > before:
        return None
    return _spec(name, dtype, access, table, address, registers, codec, f, origin)


def _node_point(
    name: str, f: dict[str, Any], origin: KeyPath, bad: Report, issues: list[Issue], before: int
) -> PointSpec | None:
    for field in ("table", "address", "byte_order", "bit", "raw_type"):
        if field in f:
            bad(field, f"{field} does not apply to node points (they arrive as JSON)")
    dtype = DataType(f.get("type") or "float64")
    if dtype not in NODE_TYPES:
        bad("type", f"node points cannot be {dtype.value}")
    access = Access(f.get("access", "r"))
    _common_checks(dtype, access, f, bad)
    if len(issues) > before:
        return None
    return _spec(name, dtype, access, None, 0, 0, None, {**f, "key": f.get("key", name)}, origin)


def _common_checks(dtype: DataType, access: Access, f: dict[str, Any], bad: Report) -> None:
    if dtype is DataType.STRING and "length" not in f:
        bad("length", "string points need a length (bytes)")
    if dtype is DataType.BIT and "bit" not in f:
        bad("bit", "bit points need the bit number (0-15)")
    if dtype is DataType.ENUM and not f.get("enum"):
        bad("enum", "enum points need an enum mapping (raw value: name)")
    if f.get("enum") and dtype is not DataType.ENUM:
        bad("enum", f"an enum mapping needs type enum, not {dtype.value}")
    if "raw_type" in f:
        raw = DataType(f["raw_type"])
        allowed = {DataType.ENUM: RAW_TYPES_FOR_ENUM, DataType.BITFIELD: RAW_TYPES_FOR_BITFIELD}.get(dtype)
        if allowed is None:
            bad("raw_type", "raw_type only applies to enum and bitfield points")
        elif raw not in allowed:
            bad("raw_type", f"{dtype.value} raw_type must be one of {', '.join(sorted(allowed))}")
    for field in ("scale", "offset", "decimals"):
        if field in f and dtype not in NUMERIC_TYPES:
            bad(field, f"{field} applies to numeric types only, not {dtype.value}")
    lo, hi = f.get("min"), f.get("max")
    if lo is not None and hi is not None and lo > hi:
        bad("min", f"min {lo} is greater than max {hi}")
    if access.writable and (dtype in NUMERIC_TYPES or dtype is DataType.BITFIELD) and (lo is None or hi is None):
        bad("access", f"writable point needs min and max (access is {access.value})")
    if f.get("control") == "sbo" and not access.writable:
        bad("control", "select-before-operate (control: sbo) needs a writable point")


def _make_codec(dtype: DataType, f: dict[str, Any], bad: Report) -> Codec | None:
    try:
        codec = Codec(
            dtype,
            ByteOrder(f.get("byte_order", "ABCD")),
            scale=f.get("scale", 1),
            offset=f.get("offset", 0),
            length=f.get("length", 0),
            bit=f.get("bit", 0),
            raw_type=DataType(f["raw_type"]) if "raw_type" in f else None,
            enum=f.get("enum"),
            decimals=f.get("decimals"),
        )
    except (CodecError, ValueError, KeyError) as exc:
        bad(None, str(exc))
        return None
    for field in ("min", "max", "initial"):
        if f.get(field) is not None:
            try:
                codec.to_raw(f[field])
            except CodecError as exc:
                bad(field, f"{field} cannot be encoded: {exc}")
    return codec


def _spec(
    name: str,
    dtype: DataType,
    access: Access,
    table: Table | None,
    address: int,
    registers: int,
    codec: Codec | None,
    f: dict[str, Any],
    origin: KeyPath,
) -> PointSpec:
    return PointSpec(
        name=name,
        dtype=dtype,
        access=access,
        table=table,
        address=address,
        registers=registers,
        codec=codec,
        unit=f.get("unit"),
        min=f.get("min"),
        max=f.get("max"),
        enum=f.get("enum"),
        bits=f.get("bits"),
        device_class=f.get("device_class"),
        state_class=f.get("state_class"),
        control=f.get("control"),
        description=f.get("description"),
        initial=f.get("initial"),
        key=f.get("key"),
        group=f.get("group"),
        origin=origin,
    )


def _overlaps(points: list[PointSpec]) -> Iterator[Issue]:
    by_table: dict[Table, list[PointSpec]] = {}
    for p in points:
        if p.table is not None:
            by_table.setdefault(p.table, []).append(p)
    for table, members in by_table.items():
        members.sort(key=lambda p: p.address)
        active: list[PointSpec] = []
        for p in members:
            active = [a for a in active if a.end >= p.address]
            for other in active:
                if not _may_share(p, other):
                    where = f"{table.value} {p.address}" if p.registers == 1 else f"{table.value} {p.address}..{p.end}"
                    yield Issue(p.origin, f"'{p.name}' ({where}) overlaps '{other.name}'", key=True)
            active.append(p)


def _may_share(a: PointSpec, b: PointSpec) -> bool:
    """Bit views of one status register may share it, as long as two bits are not the same bit."""
    if a.dtype not in BIT_VIEWS or b.dtype not in BIT_VIEWS:
        return False
    if a.dtype is DataType.BIT and b.dtype is DataType.BIT:
        return a.codec is not None and b.codec is not None and a.codec.bit != b.codec.bit
    return True


def _forbidden_hits(
    points: list[PointSpec], forbidden: tuple[tuple[Table | None, int, int], ...], shift: int
) -> Iterator[Issue]:
    for p in points:
        for table, start, end in forbidden:
            applies = p.table is table if table is not None else (p.table is not None and not p.table.is_bits)
            if applies and p.address <= end and p.end >= start:
                yield Issue(
                    p.origin, f"'{p.name}' lies in the forbidden range {start + shift}..{end + shift}", key=True
                )


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
