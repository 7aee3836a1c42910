"""`cityedge read` and `cityedge write`: probe one device without a configuration file.

With a profile, points are read with the same planner and decoded with the same
codec as the gateway. Without one, `--all-orders` decodes the same registers in every
byte order, which is how an integrator finds out how a device sends its values.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.cli import meters
from gateway.cli.errors import UsageError
from gateway.cli.meters import METER_PROTOCOLS
from gateway.cli.options import address, positive_int, register_address, seconds, unit_id
from gateway.common.problems import did_you_mean
from gateway.common.validate import explain
from gateway.config.model import DeviceConfig
from gateway.core.commands import CommandError, check_value
from gateway.core.device import Device
from gateway.points.types import DataType
from gateway.profiles.expand import expand
from gateway.profiles.registry import ProfileRegistry
from gateway.south.driver import DeviceRefused, Timeout, TransactionError
from gateway.south.modbus.codec import ByteOrder, Codec, CodecError
from gateway.south.modbus.driver import DRIVER
from gateway.south.modbus.links import ModbusRtuLink, ModbusRtuTcpLink, ModbusTcpLink
from gateway.south.modbus.pdu import check_response, read_request
from gateway.south.modbus.pointio import read_point, write_point
from gateway.south.modbus.profile import Table
from gateway.south.modbus.transport import Transport, make_transport

MODBUS_PORT = 502


def _link_arguments(p: argparse.ArgumentParser, meters: bool = False) -> None:
    if meters:
        p.add_argument(
            "--protocol",
            choices=["modbus", *METER_PROTOCOLS],
            default="modbus",
            help="what the device speaks: modbus, iec62056 (mode C meters), mbus, ascii (text-line sensors)",
        )
        p.add_argument(
            "--meter",
            metavar="ADDRESS",
            help="iec62056: the meter's device address; mbus: primary (0-250) or secondary address; "
            "ascii: fills {address} in the profile's request",
        )
        p.add_argument("--request", metavar="TEXT", help="ascii without a profile: what to send (\\r, \\n allowed)")
        p.add_argument("--terminator", default="\\r\\n", metavar="TEXT", help="ascii without a profile: how lines end")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST[:PORT]", help=f"Modbus TCP device or gateway (port {MODBUS_PORT})")
    where.add_argument(
        "--rtu-tcp",
        metavar="HOST[:PORT]",
        help=f"RTU frames over TCP, as serial-to-Ethernet converters send them (port {MODBUS_PORT})",
    )
    where.add_argument("--serial", metavar="DEV", help="serial port, e.g. /dev/ttyUSB0")
    p.add_argument(
        "--baudrate",
        type=positive_int,
        default=None,
        help="serial speed (default: 9600; iec62056: 300 for the sign-on; mbus: 2400)",
    )
    p.add_argument(
        "--parity", choices=["N", "E", "O"], default=None, help="serial parity (default: N; iec62056 and mbus: E)"
    )
    p.add_argument("--bytesize", type=int, choices=[7, 8], default=None, help="data bits (default: 8; iec62056: 7)")
    p.add_argument("--stopbits", type=int, choices=[1, 2], default=1, help="serial stop bits")
    p.add_argument("--unit", type=unit_id, help="Modbus unit (slave) id: 1..247 on a bus, 0..255 on TCP (required)")
    p.add_argument(
        "--timeout",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="how long to wait for each answer (default: 1; iec62056 and ascii: 2; mbus: 0.5)",
    )
    p.add_argument("--profile", help="device profile (see cityedge profiles list)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="profile parameter (repeat)")
    p.add_argument(
        "--profile-dir", type=Path, action="append", default=[], metavar="DIR", help="also look in DIR (repeat)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")


def register(sub: Any) -> None:
    read = sub.add_parser(
        "read",
        help="read a device now: decoded points, or raw registers in every byte order, or a meter's raw telegram",
    )
    _link_arguments(read, meters=True)
    read.add_argument("--point", action="append", metavar="NAME", help="only these points (with --profile)")
    read.add_argument("--table", choices=[t.value for t in Table], help="raw read: table")
    read.add_argument("--address", type=register_address, help="raw read: first address (0-based; 0x.. allowed)")
    read.add_argument(
        "--count", type=positive_int, default=None, help="raw read: registers or bits (default: what the type needs)"
    )
    read.add_argument(
        "--type",
        choices=[t.value for t in DataType if t not in (DataType.BIT, DataType.ENUM)],
        default="uint16",
        help="raw read: decode as this type",
    )
    read.add_argument(
        "--byte-order", choices=[o.value for o in ByteOrder], default="ABCD", help="raw read: decode in this order"
    )
    read.add_argument("--all-orders", action="store_true", help="raw read: decode in all four byte orders")
    read.set_defaults(handler=run_read)

    write = sub.add_parser("write", help="write one point, validated against its profile, and read it back")
    _link_arguments(write)
    write.add_argument("--point", required=True, help="the point to write (a writable point of the profile)")
    write.add_argument("--value", required=True, help="a number, true/false, or an enum name")
    write.add_argument("--no-readback", action="store_true", help="do not read the point back after writing")
    write.set_defaults(handler=run_write)


def _link(args: argparse.Namespace) -> ModbusTcpLink | ModbusRtuTcpLink | ModbusRtuLink:
    try:
        if args.serial:
            return ModbusRtuLink(
                id="probe",
                type="modbus-rtu",
                device=args.serial,
                baudrate=args.baudrate or 9600,
                parity=args.parity or "N",
                stopbits=args.stopbits,
                timeout=args.timeout,
            )
        option, given = ("--tcp", args.tcp) if args.tcp else ("--rtu-tcp", args.rtu_tcp)
        host, port = address(option, given, MODBUS_PORT)
        if args.tcp:
            return ModbusTcpLink(id="probe", type="modbus-tcp", host=host, port=port, timeout=args.timeout)
        return ModbusRtuTcpLink(id="probe", type="modbus-rtu-tcp", host=host, port=port, timeout=args.timeout)
    except ValidationError as exc:
        raise UsageError("; ".join(explain(e, ModbusRtuLink) for e in exc.errors())) from None


def _check_unit(args: argparse.Namespace) -> None:
    if args.unit is None:
        raise UsageError("Modbus needs --unit (the device's unit id); other protocols: give --protocol")
    if args.serial and not 1 <= args.unit <= 247:
        raise UsageError(f"--unit {args.unit}: a device on a serial bus answers to 1..247 (0 is broadcast, unanswered)")


def _device(args: argparse.Namespace) -> Device:
    registry = ProfileRegistry(args.profile_dir)
    if registry.path(args.profile) is None:
        raise UsageError(f"unknown profile '{args.profile}'{did_you_mean(args.profile, registry.names())}")
    params = {}
    for item in args.param:
        name, _, value = item.partition("=")
        if not value.lstrip("-").isdigit():
            raise UsageError(f"--param takes NAME=INTEGER, got {item!r}")
        params[name] = int(value)
    profile = registry.load(args.profile)[0]
    if profile.protocol != DRIVER.name:
        raise UsageError(f"profile '{args.profile}' describes a {profile.protocol} device; read and write speak Modbus")
    resolved, issues = expand(profile, params)
    if issues:
        raise UsageError("; ".join(i.message for i in issues))
    config = DeviceConfig(id="probe", profile=args.profile, link="probe", unit=args.unit, params=params)
    return Device(config, resolved, args.timeout, DRIVER, args.unit)


async def _with_transport(args: argparse.Namespace, work: Callable[[Transport], Awaitable[int]]) -> int:
    _check_unit(args)
    transport = make_transport(_link(args))
    try:
        code = await work(transport)
    finally:
        await transport.close()
    if code and args.tcp and timed_out(args):
        hint = await _rtu_over_tcp_answers(args)
        if hint:
            print(f"cityedge: hint: {hint}", file=sys.stderr)
    return code


def timed_out(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "timed_out", False))


async def _rtu_over_tcp_answers(args: argparse.Namespace) -> str | None:
    """After silence over Modbus TCP: does the same address answer RTU frames (a serial-to-Ethernet converter)?"""
    host, port = address("--tcp", args.tcp, MODBUS_PORT)
    link = ModbusRtuTcpLink(id="probe", type="modbus-rtu-tcp", host=host, port=port, timeout=args.timeout)
    transport = make_transport(link)
    try:
        request = read_request(Table.HOLDING, 0, 1)
        check_response(request, await transport.transact(args.unit, request, args.timeout))
    except DeviceRefused:
        pass  # an exception answer is an answer: the unit is there, speaking RTU
    except TransactionError:
        return None
    finally:
        await transport.close()
    return f"{host}:{port} answers RTU frames: it is a serial-to-Ethernet converter; use --rtu-tcp {host}:{port}"


def _transact(transport: Transport, args: argparse.Namespace) -> Callable[[bytes], Awaitable[bytes]]:
    async def transact(pdu: bytes) -> bytes:
        return check_response(pdu, await transport.transact(args.unit, pdu, args.timeout))

    return transact


def run_read(args: argparse.Namespace) -> int:
    args.timed_out = False
    if args.protocol != "modbus":
        return meters.run_read(args)
    args.timeout = args.timeout or 1.0
    if args.profile:
        return asyncio.run(_with_transport(args, lambda t: _read_profile(t, args)))
    if args.table is None or args.address is None:
        raise UsageError("give --profile, or --table and --address for a raw read")
    return asyncio.run(_with_transport(args, lambda t: _read_raw(t, args)))


async def _read_profile(transport: Transport, args: argparse.Namespace) -> int:
    device = _device(args)
    points = [p for p in device.resolved.points if p.access.readable]
    if args.point:
        names = {p.name for p in points}
        for name in args.point:
            if name not in names:
                raise UsageError(f"profile '{args.profile}' has no readable point '{name}'{did_you_mean(name, names)}")
        points = [p for p in points if p.name in args.point]
    failed = 0
    for request in DRIVER.plan(device, points):
        try:
            DRIVER.decode(device, request, await DRIVER.transact(transport, device, request))
        except TransactionError as exc:
            failed += 1
            args.timed_out = args.timed_out or isinstance(exc, Timeout)
            device.fail(request.point_names, f"{exc.kind}: {exc}")
    rows = [
        {"point": p.name, "value": device.values.get(p.name), "unit": p.unit, "error": device.errors.get(p.name)}
        for p in points
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = max((len(p.name) for p in points), default=5)
        for r in rows:
            shown = f"ERROR {r['error']}" if r["error"] else f"{r['value']} {r['unit'] or ''}".rstrip()
            print(f"{r['point']:<{width}}  {shown}")
    return 1 if failed else 0


async def _read_raw(transport: Transport, args: argparse.Namespace) -> int:
    dtype = DataType(args.type)
    length = 2 * args.count if dtype is DataType.STRING and args.count else 16
    probe = Codec(dtype, length=length)
    count = args.count or probe.registers
    table = Table(args.table)
    most = 2000 if table.is_bits else 125
    if count > most:
        raise UsageError(f"--count {count}: one {table.value} read carries at most {most}")
    if args.address + count > 65536:
        raise UsageError(f"--address {args.address} --count {count} runs past the last address (65535)")
    try:
        data = await _transact(transport, args)(read_request(table, args.address, count))
    except TransactionError as exc:
        args.timed_out = isinstance(exc, Timeout)
        print(f"cityedge: error: {exc.kind}: {exc}", file=sys.stderr)
        return 1
    if table.is_bits:
        bits = [bool(data[i // 8] >> (i % 8) & 1) for i in range(count)]
        print(json.dumps({"address": args.address, "bits": bits}) if args.json else " ".join(str(int(b)) for b in bits))
        return 0
    registers = list(struct.unpack(f">{len(data) // 2}H", data))
    orders = list(ByteOrder) if args.all_orders else [ByteOrder(args.byte_order)]
    decoded: dict[str, object] = {}
    for order in orders:
        try:
            decoded[order.value] = Codec(dtype, order, length=length).decode(data, 0)
        except CodecError as exc:
            decoded[order.value] = f"({exc})"
    if args.json:
        print(json.dumps({"address": args.address, "registers": registers, "type": dtype.value, "decoded": decoded}))
        return 0
    print(f"registers at {args.address}: " + " ".join(f"0x{r:04X}" for r in registers))
    for name, value in decoded.items():
        print(f"  {dtype.value} {name}: {value}")
    return 0


def run_write(args: argparse.Namespace) -> int:
    args.timed_out = False
    args.timeout = args.timeout or 1.0
    if not args.profile:
        raise UsageError("write needs --profile, so the value can be checked against the point")
    return asyncio.run(_with_transport(args, lambda t: _write(t, args)))


async def _write(transport: Transport, args: argparse.Namespace) -> int:
    device = _device(args)
    point = device.points.get(args.point)
    if point is None:
        raise UsageError(
            f"profile '{args.profile}' has no point '{args.point}'{did_you_mean(args.point, device.points)}"
        )
    raw = yaml.safe_load(args.value)
    try:
        value = check_value(point, raw)
    except CommandError as exc:
        raise UsageError(f"{exc.code}: {exc.message}") from None
    transact = _transact(transport, args)
    try:
        await write_point(transact, point, value)
        readback = None if args.no_readback or not point.access.readable else await read_point(transact, point)
    except TransactionError as exc:
        args.timed_out = isinstance(exc, Timeout)
        print(f"cityedge: error: write failed: {exc.kind}: {exc}", file=sys.stderr)
        return 1
    result = {"point": point.name, "written": value, "read_back": readback}
    if args.json:
        print(json.dumps(result))
    else:
        back = "" if readback is None else f", reads back {readback}"
        print(f"{point.name}: wrote {value}{back}")
    if readback is not None and readback != value:
        print(f"cityedge: warning: the device reports {readback!r} after writing {value!r}", file=sys.stderr)
        return 1
    return 0
