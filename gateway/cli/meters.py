"""`cityedge read --protocol iec62056|mbus|ascii` and `cityedge mbus scan`: meters and text sensors on a serial
line, without a configuration file.

Without a profile a read shows what the device sent, raw and taken apart (an IEC 62056-21
readout's data sets, an M-Bus telegram's records, a sensor's lines), which is what an
integrator writes a profile from. With `--profile` the points come out exactly as the
gateway would publish them: the same driver, the same decoding.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from gateway.cli.errors import UsageError
from gateway.cli.options import address_span, positive_int, seconds
from gateway.common.problems import did_you_mean
from gateway.config.model import DeviceConfig
from gateway.core.device import Device
from gateway.profiles.expand import PointSpec, expand
from gateway.profiles.model import Profile
from gateway.profiles.registry import ProfileRegistry
from gateway.south import driver as south
from gateway.south.ascii.driver import DRIVER as ASCII
from gateway.south.ascii.links import AsciiLink
from gateway.south.iec62056.driver import DRIVER as IEC
from gateway.south.iec62056.links import Iec62056Link
from gateway.south.iec62056.telegram import Readout
from gateway.south.mbus.driver import DRIVER as MBUS
from gateway.south.mbus.driver import MbusTransport, Reading
from gateway.south.mbus.links import MbusLink
from gateway.south.mbus.scan import Found, scan_primary, scan_secondary
from gateway.south.serialline import SerialLine

METER_PROTOCOLS = ("iec62056", "mbus", "ascii")
DRIVERS: dict[str, Any] = {"iec62056": IEC, "mbus": MBUS, "ascii": ASCII}
DEFAULTS = {  # baudrate, parity, bytesize, timeout
    "iec62056": (300, "E", 7, 2.0),
    "mbus": (2400, "E", 8, 0.5),
    "ascii": (9600, "N", 8, 2.0),
}


def register(sub: Any) -> None:
    mbus = sub.add_parser("mbus", help="M-Bus segments: find the meters on one")
    tasks = mbus.add_subparsers(dest="mbus_command", metavar="TASK", required=True)
    scan = tasks.add_parser("scan", help="list the meters on a segment, with the configuration that reads them")
    scan.add_argument("--serial", required=True, metavar="DEV", help="serial port of the level converter")
    scan.add_argument("--baudrate", type=positive_int, default=2400, help="the segment's speed")
    scan.add_argument("--parity", choices=["N", "E", "O"], default="E", help="serial parity")
    scan.add_argument("--timeout", type=seconds, default=0.5, metavar="SECONDS", help="wait for each answer")
    scan.add_argument(
        "--addresses", type=address_span, default="0-250", metavar="FIRST-LAST", help="primary addresses to try"
    )
    how = scan.add_mutually_exclusive_group()
    how.add_argument("--primary", action="store_true", help="only the primary addresses 0-250")
    how.add_argument("--secondary", action="store_true", help="only the secondary (wildcard) search")
    scan.add_argument("--json", action="store_true", help="print JSON")
    scan.set_defaults(handler=run_scan)


# -- read ----------------------------------------------------------------------------------------------


def _line_settings(args: argparse.Namespace) -> tuple[int, str, int, float]:
    baud, parity, bytesize, timeout = DEFAULTS[args.protocol]
    return args.baudrate or baud, args.parity or parity, args.bytesize or bytesize, args.timeout or timeout


def _link(args: argparse.Namespace) -> Any:
    if not args.serial:
        raise UsageError(f"--protocol {args.protocol} reads a serial line: give --serial DEV")
    baud, parity, bytesize, timeout = _line_settings(args)
    common = {"id": "probe", "device": args.serial, "parity": parity, "bytesize": bytesize, "timeout": timeout}
    try:
        if args.protocol == "iec62056":
            return Iec62056Link(type="iec62056-serial", baudrate=baud, **common)
        if args.protocol == "mbus":
            return MbusLink(type="mbus-serial", baudrate=baud, **common)
        return AsciiLink(type="ascii-serial", baudrate=baud, **common)
    except ValueError as exc:
        raise UsageError(
            f"--baudrate {baud}: not a speed {args.protocol} links take ({exc.__class__.__name__})"
        ) from None


def _profile(args: argparse.Namespace) -> Profile:
    registry = ProfileRegistry(args.profile_dir)
    if args.profile is None:
        if args.protocol == "ascii" and args.request is None:
            raise UsageError("--protocol ascii needs --profile (its line format), or --request to see raw lines")
        model = DRIVERS[args.protocol].profile_model
        base = {"name": "probe", "manufacturer": "-", "model": "-", "description": "-", "source": "-"}
        line = {"request": _unescape(args.request) if args.request else None, "pattern": "(?P<line>.*)"}
        extra = {"line": {**line, "terminator": _unescape(args.terminator)}} if args.protocol == "ascii" else {}
        profile: Profile = model.model_validate({**base, **extra, "protocol": args.protocol})
        return profile
    if registry.path(args.profile) is None:
        raise UsageError(f"unknown profile '{args.profile}'{did_you_mean(args.profile, registry.names())}")
    profile = registry.load(args.profile)[0]
    if profile.protocol != args.protocol:
        raise UsageError(f"profile '{args.profile}' describes a {profile.protocol} device, not {args.protocol}")
    return profile


def _unescape(text: str) -> str:
    return text.replace("\\r", "\r").replace("\\n", "\n")


def _device(args: argparse.Namespace, link: Any) -> Device:
    profile = _profile(args)
    resolved, issues = expand(profile, {})
    if issues:
        raise UsageError("; ".join(i.message for i in issues))
    driver = DRIVERS[args.protocol]
    address: Any = args.meter
    if args.protocol == "mbus" and address is not None and address.isdigit() and len(address) < 4:
        address = int(address)
    config = DeviceConfig(id="probe", profile=profile.name, link="probe", address=address)
    found, why = driver.address(config)
    if why is not None:
        raise UsageError(f"--meter: {why}")
    return Device(config, resolved, link.timeout, driver, found)


def run_read(args: argparse.Namespace) -> int:
    link = _link(args)
    device = _device(args, link)
    return asyncio.run(_read(args, link, device))


async def _read(args: argparse.Namespace, link: Any, device: Device) -> int:
    driver = DRIVERS[args.protocol]
    line: SerialLine = driver.transport(link)
    line.answers = []
    points = [p for p in device.resolved.points if p.access.readable]
    if args.point:
        names = {p.name for p in points}
        for name in args.point:
            if name not in names:
                raise UsageError(f"profile '{args.profile}' has no readable point '{name}'{did_you_mean(name, names)}")
        points = [p for p in points if p.name in args.point]
    request = (driver.plan(device, points) or [_Everything()])[0]
    started = asyncio.get_running_loop().time()
    try:
        answer = await driver.transact(line, device, request)
    except south.TransactionError as exc:
        _show_raw(args, line.answers or [], None)
        print(f"cityedge: error: {exc.kind}: {exc}", file=sys.stderr)
        return 1
    finally:
        await line.close()
    took = asyncio.get_running_loop().time() - started
    if points:
        driver.decode(device, request, answer)
    rows: list[dict[str, Any]] = [
        {"point": p.name, "value": device.values.get(p.name), "unit": p.unit, "error": device.errors.get(p.name)}
        for p in points
    ]
    report: dict[str, Any] = {"seconds": round(took, 3), **_decoded(args.protocol, answer, device), "points": rows}
    report["raw"] = [a.decode("latin-1") if args.protocol != "mbus" else a.hex(" ") for a in line.answers or []]
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 1 if any(r["error"] for r in rows) else 0
    _show_raw(args, line.answers or [], report)
    if rows:
        width = max(len(r["point"]) for r in rows)
        print("points:")
        for r in rows:
            shown = f"ERROR {r['error']}" if r["error"] else f"{r['value']} {r['unit'] or ''}".rstrip()
            print(f"  {r['point']:<{width}}  {shown}")
    return 1 if any(r["error"] for r in rows) else 0


class _Everything:
    """A read with no points: the whole telegram, for looking at."""

    points: tuple[PointSpec, ...] = ()
    point_names: tuple[str, ...] = ()


def _decoded(protocol: str, answer: Any, device: Device) -> dict[str, Any]:
    if protocol == "iec62056":
        readout: Readout = answer
        ident = device.protocol_state.identification
        return {
            "identification": None if ident is None else {
                "manufacturer": ident.manufacturer, "baud": ident.baud, "ident": ident.ident,
                "reaction_ms": round(ident.reaction * 1000),
            },
            "baud": device.learned.get("readout", {}).get("baud"),
            "data_sets": {a: [[i.value, i.unit] for i in items] for a, items in readout.sets.items()},
        }  # fmt: skip
    if protocol == "mbus":
        reading: Reading = answer
        header = reading.header
        return {
            "meter": None if header is None else {"secondary": header.secondary, "medium": header.medium_name,
                                                  "status": header.status, "access": header.access},
            "telegrams": reading.telegrams,
            "records": [
                {"quantity": r.quantity, "function": r.function, "storage": r.storage, "tariff": r.tariff,
                 "subunit": r.subunit, "modifier": r.modifier, "value": r.value, "unit": r.unit}
                for r in reading.records
            ],
        }  # fmt: skip
    return {"fields": {str(k): v for k, v in answer.items()}}


def _show_raw(args: argparse.Namespace, answers: list[bytes], report: dict[str, Any] | None) -> None:
    out = sys.stdout if report is not None else sys.stderr
    for n, raw in enumerate(answers, 1):
        if args.protocol == "mbus":
            print(f"answer {n}: {raw.hex(' ')}", file=out)
        else:
            text = raw.decode("latin-1")
            shown = text.replace("\x02", "<STX>").replace("\x03", "<ETX>").replace("\x06", "<ACK>")
            print(f"received: {shown.rstrip()!r}" if "\n" not in shown.rstrip() else "received:", file=out)
            if "\n" in shown.rstrip():
                for row in shown.splitlines():
                    print(f"  {row}", file=out)
    if report is None:
        return
    if args.protocol == "iec62056":
        ident = report["identification"]
        if ident:
            print(
                f"meter {ident['manufacturer']} {ident['ident']}: offers {ident['baud']} baud, "
                f"reacts in {ident['reaction_ms']} ms; read at {report['baud']} baud in {report['seconds']} s"
            )
        print("data sets:")
        for address, items in report["data_sets"].items():
            print(f"  {address:<16} " + "  ".join(f"{v} {u or ''}".rstrip() for v, u in items))
    elif args.protocol == "mbus":
        meter = report["meter"]
        if meter:
            print(
                f"meter {meter['secondary']} ({meter['medium']}), status {meter['status']}, "
                f"{report['telegrams']} telegram(s)"
            )
        print("records:")
        for r in report["records"]:
            where = " ".join(f"{k} {r[k]}" for k in ("storage", "tariff", "subunit") if r[k])
            extra = f" ({r['modifier']})" if r["modifier"] else ""
            print(f"  {r['quantity']:<24} {r['function']:<13} {where:<18} {r['value']} {r['unit']}{extra}".rstrip())
    else:
        print("fields: " + ", ".join(f"{k}={v!r}" for k, v in report["fields"].items()))


# -- mbus scan ------------------------------------------------------------------------------------------


def run_scan(args: argparse.Namespace) -> int:
    link = MbusLink(
        id="scan",
        type="mbus-serial",
        device=args.serial,
        baudrate=args.baudrate,
        parity=args.parity,
        timeout=args.timeout,
    )
    return asyncio.run(_scan(args, link))


async def _scan(args: argparse.Namespace, link: MbusLink) -> int:
    line = MbusTransport(link)
    progress = None if args.json else (lambda text: print(f"  {text}", file=sys.stderr))
    found: list[Found] = []
    try:
        if not args.secondary:
            span = f"{args.addresses.start}-{args.addresses.stop - 1}"
            print(f"scan: primary addresses {span} on {args.serial} at {args.baudrate} baud", file=sys.stderr)
            found += await scan_primary(line, args.addresses, timeout=args.timeout, progress=progress)
        if not args.primary:
            print("scan: secondary search (wildcards)", file=sys.stderr)
            seen = {f.header.secondary for f in found}
            found += [
                f
                for f in await scan_secondary(line, timeout=args.timeout, progress=progress)
                if f.header.secondary not in seen
            ]
    except south.ConnectionFailed as exc:
        print(f"cityedge: error: {exc}", file=sys.stderr)
        return 1
    finally:
        await line.close()
    rows = [
        {"secondary": f.header.secondary, "primary": f.primary, "manufacturer": f.header.manufacturer,
         "medium": f.header.medium_name, "records": f.records}
        for f in found
    ]  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no meters answered (check the level converter, the speed, and that the segment is powered)")
        return 1
    print(f"{'secondary address':<22} {'primary':>7}  {'medium':<16} records")
    for r in rows:
        print(
            f"{r['secondary']:<22} {'' if r['primary'] is None else r['primary']:>7}  {r['medium']:<16} {r['records']}"
        )
    print("\ndevices:  # read each by its secondary address (it stays right when primary addresses are changed)")
    for n, r in enumerate(rows, 1):
        print(f'  - {{id: meter-{n}, profile: PROFILE, link: mbus, address: "{r["secondary"]}", poll: 15m}}')
    return 0
