"""`cityedge profiles list|show|check|schema`: browse and check device profiles."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gateway.cli.errors import UsageError
from gateway.common.problems import ConfigError, Problem, did_you_mean
from gateway.config.schema import SCHEMAS, json_schema
from gateway.profiles.expand import PointSpec
from gateway.profiles.model import Profile
from gateway.profiles.registry import ProfileRegistry, load_profile, resolve
from gateway.south.driver import ProfileProtocol


def register(sub: Any) -> None:
    p = sub.add_parser("profiles", help="list, show, check device profiles; print JSON Schemas")
    p.add_argument(
        "--profile-dir", type=Path, action="append", default=[], metavar="DIR", help="also look in DIR (may repeat)"
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = actions.add_parser("list", help="all known profiles")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=run_list)
    show = actions.add_parser("show", help="one profile's points table")
    show.add_argument("name", help="the profile's name, e.g. eastron-sdm630")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=run_show)
    chk = actions.add_parser("check", help="validate profile files (e.g. one you are writing)")
    chk.add_argument("files", type=Path, nargs="+", metavar="FILE", help="profile files to check")
    chk.set_defaults(handler=run_check)
    schema = actions.add_parser("schema", help="JSON Schema for editors")
    schema.add_argument("kind", nargs="?", choices=sorted(SCHEMAS), default="profile", help="which schema")
    schema.set_defaults(handler=run_schema)


def _registry(args: argparse.Namespace) -> ProfileRegistry:
    return ProfileRegistry(args.profile_dir)


def run_list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    rows: list[dict[str, Any]] = []
    problems: list[Problem] = []
    for name in registry.names():
        try:
            profile, _ = registry.load(name)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        rows.append(
            {
                "name": name,
                "manufacturer": profile.manufacturer,
                "model": profile.model,
                "protocol": profile.protocol,
                "points": len(resolve(profile).points),
                "path": str(registry.path(name)),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(
            _table(
                ["NAME", "MANUFACTURER", "MODEL", "PROTOCOL", "POINTS"],
                [[r["name"], r["manufacturer"], r["model"], r["protocol"], str(r["points"])] for r in rows],
            )
        )
    if problems:
        raise ConfigError(problems)
    return 0


def run_show(args: argparse.Namespace) -> int:
    registry = _registry(args)
    if registry.path(args.name) is None:
        raise UsageError(f"unknown profile '{args.name}'{did_you_mean(args.name, registry.names())}")
    profile, _ = registry.load(args.name)
    resolved = resolve(profile)
    rows = [point_row(profile, resolved.protocol, p) for p in resolved.points]
    if args.json:
        print(json.dumps({"profile": profile.model_dump(mode="json", exclude_none=True), "points": rows}, indent=2))
        return 0
    print(f"{profile.name}: {profile.manufacturer} {profile.model} ({profile.protocol})")
    print(f"  {profile.description.strip()}")
    print(f"  source: {profile.source.strip()}")
    for line in resolved.protocol.summary(profile):
        print(f"  {line}")
    if profile.parameters:
        params = ", ".join(f"{k}={v.default}" for k, v in profile.parameters.items())
        print(f"  parameters: {params}")
    print()
    keys = list(rows[0]) if rows else ["point", "type", "unit", "access", "limits"]
    headers = [_HEADINGS.get(k, k.upper()) for k in keys]
    print(_table(headers, [[str(r[k]) for k in keys] for r in rows]))
    return 0


_HEADINGS = {"byte_order": "ORDER"}


def point_row(profile: Profile, protocol: ProfileProtocol, p: PointSpec) -> dict[str, Any]:
    """One line of a profile's points table: the neutral columns around the protocol's own."""
    row: dict[str, Any] = {"point": p.name, **protocol.columns(profile, p)}
    row.setdefault("type", p.dtype.value)
    return {**row, "unit": p.unit or "", "access": p.access.value + (" sbo" if p.sbo else ""), "limits": _limits(p)}


def _limits(p: PointSpec) -> str:
    if p.enum:
        return "|".join(p.enum.values())
    if p.min is not None or p.max is not None:
        return f"{'' if p.min is None else f'{p.min:g}'}..{'' if p.max is None else f'{p.max:g}'}"
    return ""


def run_check(args: argparse.Namespace) -> int:
    problems: list[Problem] = []
    for path in args.files:
        try:
            profile, _ = load_profile(path)
            print(f"{path}: OK ({len(resolve(profile).points)} points)")
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return 0


def run_schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(args.kind), indent=2))
    return 0


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)
