"""`cityedge node flash|deploy|provision|monitor|setup`: technician tools for ESP32 sensor nodes.

Exit 0: done (setup: PASS); 1: it did not work, with a plain-language reason (setup: FAIL);
2: bad arguments or a broken inventory file.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from gateway.cli.errors import NODE_EXTRA, UsageError, needs
from gateway.cli.options import positive_int, seconds
from gateway.technician import FIRMWARE, NodeToolError

CHIP_NAMES = ["esp32", "esp32s2", "esp32s3", "esp32c3", "esp32c6"]
SENSOR_HELP = "TYPE[:key=value,...], e.g. bh1750, pir:pin=27, battery:pin=34,divider=2 (repeat for more)"


def register(sub: Any) -> None:
    p = sub.add_parser("node", help="technician tools: flash, deploy, provision, monitor and set up ESP32 nodes")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    flash = actions.add_parser("flash", help="erase the board and write MicroPython with esptool")
    _port(flash)
    _flash_options(flash, required=True)
    flash.set_defaults(handler=needs(NODE_EXTRA, run_flash))

    deploy = actions.add_parser("deploy", help="copy the node app to the board (compiled, verified), then reset")
    _port(deploy)
    _deploy_options(deploy)
    deploy.add_argument("--no-reset", action="store_true", help="leave the app stopped (the board stays in the REPL)")
    deploy.set_defaults(handler=needs(NODE_EXTRA, run_deploy))

    provision = actions.add_parser("provision", help="write the node's config.json (id, WiFi, broker, sensors)")
    _port(provision)
    _provision_options(provision)
    provision.add_argument("--no-reset", action="store_true", help="do not reset the board afterwards")
    provision.set_defaults(handler=needs(NODE_EXTRA, run_provision))

    monitor = actions.add_parser("monitor", help="follow a node: its messages on the broker, or its serial console")
    monitor.add_argument("--id", help="the node id (for the broker)")
    monitor.add_argument("--port", metavar="DEV", help="show this serial port's console instead of the broker")
    _baudrate(monitor)
    monitor.add_argument(
        "--broker", default="127.0.0.1:1883", metavar="HOST[:PORT]", help="the broker, as this laptop reaches it"
    )
    monitor.add_argument("--topic", default="nodes", help="the nodes' topic prefix")
    _broker_login(monitor, "your own broker user (a technician's login, see the ACL)")
    monitor.add_argument("--tls-ca", type=Path, metavar="FILE", help="connect with TLS, trusting this CA")
    monitor.add_argument("--duration", type=seconds, metavar="SECONDS", help="stop after this long (default: Ctrl-C)")
    monitor.set_defaults(handler=run_monitor)

    setup = actions.add_parser("setup", help="flash (optional), deploy, provision, reset, check the node reports")
    _port(setup)
    _flash_options(setup, required=False)
    _deploy_options(setup)
    _provision_options(setup)
    setup.add_argument(
        "--watch-broker",
        metavar="HOST[:PORT]",
        help="the broker as this laptop reaches it (default: as the node does)",
    )
    setup.add_argument(
        "--watch-user", metavar="USER", help="your own broker user for the check (default: the node's, see the page)"
    )
    setup.add_argument("--watch-password-env", metavar="VAR", help="environment variable with that user's password")
    setup.add_argument(
        "--check-for",
        type=seconds,
        default=120.0,
        metavar="SECONDS",
        help="how long to wait for the node's data",
    )
    setup.set_defaults(handler=needs(NODE_EXTRA, run_setup))


def _baudrate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baudrate", type=positive_int, default=115200, help="the board's serial console speed")
    p.add_argument("--baud", dest="baudrate", type=positive_int, help=argparse.SUPPRESS)  # the old name


def _broker_login(p: argparse.ArgumentParser, who: str) -> None:
    p.add_argument("--broker-user", metavar="USER", help=who)
    p.add_argument("--broker-password-env", metavar="VAR", help="environment variable with that user's password")
    p.add_argument("--username", dest="broker_user", help=argparse.SUPPRESS)  # the old names (monitor)
    p.add_argument("--password-env", dest="broker_password_env", help=argparse.SUPPRESS)


def _port(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", required=True, metavar="DEV", help="the node's USB serial port, e.g. /dev/ttyUSB0")
    _baudrate(p)
    p.add_argument(
        "--timeout", type=seconds, default=10.0, metavar="SECONDS", help="how long to wait for each answer of the board"
    )
    p.add_argument("--wait", dest="timeout", type=seconds, help=argparse.SUPPRESS)  # the old name


def _flash_options(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--firmware", type=Path, required=required, metavar="IMAGE.bin", help="MicroPython image")
    p.add_argument("--chip", choices=CHIP_NAMES, help="the board's chip (default: the one the image is built for)")
    p.add_argument("--flash-baudrate", type=positive_int, default=460800, help="serial speed while flashing")
    p.add_argument("--flash-baud", dest="flash_baudrate", type=positive_int, help=argparse.SUPPRESS)  # the old name
    p.add_argument("--manual-boot", action="store_true", help="board without auto-reset: you hold BOOT yourself")
    p.add_argument("--connect-attempts", type=int, help=argparse.SUPPRESS)


def _deploy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--app", type=Path, default=FIRMWARE, metavar="DIR", help="the node app (the firmware/ folder)")
    p.add_argument("--source", action="store_true", help="copy .py sources instead of compiled .mpy files")


def _provision_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--id", required=True, help="the node id, e.g. pole-17-a")
    p.add_argument("--inventory", type=Path, metavar="FILE", help="nodes.yaml listing the nodes and their settings")
    p.add_argument("--wifi-ssid", metavar="NAME", help="the WiFi network the node joins")
    p.add_argument("--wifi-password-env", metavar="VAR", help="environment variable with the WiFi password")
    p.add_argument("--open-wifi", action="store_true", help="the WiFi has no password")
    p.add_argument("--broker", metavar="HOST[:PORT]", help="the broker, as the node reaches it (port 1883)")
    _broker_login(p, "the node's broker user ('{id}' becomes the node id)")
    p.add_argument("--sensor", action="append", default=[], metavar="SPEC", help=SENSOR_HELP)
    p.add_argument("--interval", metavar="TIME", help="time between readings: seconds, or 30s, 5m (default 60)")
    p.add_argument("--health-interval", metavar="TIME", help="time between health reports (default 60)")
    p.add_argument("--topic", help="topic prefix the node publishes under (default: nodes)")
    p.add_argument("--reassign", action="store_true", help="reuse a board provisioned for another node id")


# -- handlers ---------------------------------------------------------------------------------------------


def _say(line: str) -> None:
    print(line, flush=True)


def _fail(exc: NodeToolError) -> int:
    print(f"cityedge: {exc}", file=sys.stderr)
    return 1


def _reset_unless_asked_not_to(board: Any, args: argparse.Namespace, then: str) -> None:
    if not args.no_reset:
        board.reset()
        _say(f"board reset: {then}")


def _image(args: argparse.Namespace) -> Any:
    from gateway.technician.flash import inspect_image

    return inspect_image(args.firmware, args.chip) if args.firmware else None


def run_flash(args: argparse.Namespace) -> int:
    from gateway.technician.flash import flash

    try:
        image = _image(args)
        _say(f"flashing {image.describe()} to {args.port} at 0x{image.chip.offset:x} (the whole flash is erased)")
        flash(
            args.port,
            image,
            baud=args.flash_baudrate,
            manual_boot=args.manual_boot,
            connect_attempts=args.connect_attempts,
        )
    except NodeToolError as exc:
        return _fail(exc)
    _say(f"done: MicroPython {image.version} is on the board. Next: cityedge node deploy --port {args.port}")
    return 0


def run_deploy(args: argparse.Namespace) -> int:
    from gateway.technician.deploy import deploy
    from gateway.technician.serial_board import Board

    try:
        with Board(args.port, args.baudrate, args.timeout) as board:
            report = deploy(board, args.app, compile_modules=not args.source, progress=_say)
            _say(f"board: {report.board.describe()}")
            if report.leftovers:
                _say(f"  removed {', '.join(report.leftovers)} (left by a deploy that was cut short)")
            for name in report.removed:
                _say(f"  removed {name} (replaced by its other form)")
            if report.extra:
                _say(f"  left alone: {', '.join(report.extra)}")
            _say(report.summary())
            _reset_unless_asked_not_to(board, args, "the app starts")
    except NodeToolError as exc:
        return _fail(exc)
    return 0


def node_config_from(args: argparse.Namespace) -> dict[str, Any]:
    from gateway.technician.provision import (
        BadSettings,
        load_inventory,
        node_config,
        node_settings,
        settings_from_options,
    )

    try:
        if args.inventory:
            inventory, source = load_inventory(args.inventory)
            settings = node_settings(inventory, source, args.id)
            settings = _merge_options(settings, args)
        else:
            settings = settings_from_options(_merge_options({"id": args.id}, args))
    except BadSettings as exc:
        raise UsageError(str(exc)) from None
    return node_config(settings)


def _merge_options(settings: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Options given on the command line win over the inventory."""
    from gateway.technician.provision import settings_from_options

    out = {**settings}
    wifi = dict(out.get("wifi", {}))
    broker = dict(out.get("broker", {}))
    if args.wifi_ssid:
        wifi["ssid"] = args.wifi_ssid
    if args.wifi_password_env:
        wifi["password_env"] = args.wifi_password_env
    if args.open_wifi:
        wifi["open"] = True
    if args.broker:
        from gateway.technician.port import host_port

        try:
            broker["host"], port = host_port(args.broker)
        except ValueError:
            raise UsageError(f"--broker takes HOST or HOST:PORT, not {args.broker!r}") from None
        if port is not None:
            broker["port"] = port
    if args.broker_user:
        broker["user"] = args.broker_user
    if args.broker_password_env:
        broker["password_env"] = args.broker_password_env
    if wifi:
        out["wifi"] = wifi
    if broker:
        out["broker"] = broker
    if args.sensor:
        out["sensors"] = [_sensor(spec) for spec in args.sensor]
    for key in ("interval", "health_interval", "topic"):
        if getattr(args, key) is not None:
            out[key] = getattr(args, key)
    return settings_from_options(out) if args.inventory else out


def _sensor(spec: str) -> dict[str, Any]:
    from gateway.common.problems import did_you_mean
    from gateway.technician.provision import SENSOR_TYPES, sensor_problem

    kind, _, rest = spec.partition(":")
    sensor: dict[str, Any] = {"type": kind.strip()}
    if sensor["type"] not in SENSOR_TYPES:
        raise UsageError(
            f"--sensor {spec}: unknown sensor type '{sensor['type']}'{did_you_mean(sensor['type'], SENSOR_TYPES)}"
            f"; the firmware knows {', '.join(SENSOR_TYPES)}"
        )
    for pair in filter(None, rest.split(",")):
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--sensor {spec}: expected key=value after the type, got {pair!r}")
        try:
            sensor[key.strip()] = int(value, 0) if value.strip().lstrip("-").isdigit() or "x" in value else float(value)
        except ValueError:
            raise UsageError(f"--sensor {spec}: {key} takes a number, not {value!r}") from None
    problem = sensor_problem(sensor)
    if problem:
        raise UsageError(f"--sensor {spec}: {problem}")
    return sensor


def run_provision(args: argparse.Namespace) -> int:
    from gateway.technician.provision import provision, summary
    from gateway.technician.serial_board import Board

    try:
        config = node_config_from(args)
        with Board(args.port, args.baudrate, args.timeout) as board:
            before = provision(board, config, reassign=args.reassign)
            _say(f"provisioned {config['id']} on {args.port}" + (f" (was {before})" if before else ""))
            for line in summary(config):
                _say(line)
            _say("config.json written and verified")
            _reset_unless_asked_not_to(board, args, "the node starts with its new settings")
    except NodeToolError as exc:
        return _fail(exc)
    return 0


def run_monitor(args: argparse.Namespace) -> int:
    try:
        if args.port:
            return _serial_console(args)
        if not args.id:
            raise UsageError("monitor needs --id NODE (the broker) or --port DEV (the serial console)")
        from gateway.technician.watch import BrokerOptions, watch

        broker = BrokerOptions.parse(
            args.broker, username=args.broker_user, password_env=args.broker_password_env, ca=args.tls_ca
        )
        _say(f"watching {args.topic}/{args.id} on {broker}; Ctrl-C stops")
        seen = asyncio.run(watch(broker, args.topic, args.id, _say, duration=args.duration))
        if seen.first_seen is None and seen.status is None:
            _say(f"nothing heard from {args.id} (is the id right? is the node powered and in WiFi range?)")
            return 1
    except NodeToolError as exc:
        return _fail(exc)
    return 0


def _serial_console(args: argparse.Namespace) -> int:
    import serial

    from gateway.technician.console import explain
    from gateway.technician.port import check_port, port_error_message

    check_port(args.port)
    console = serial.Serial()
    console.port, console.baudrate, console.timeout = args.port, args.baudrate, 0.2
    console.dtr = False  # opening must not reset the board (auto-reset boards wire DTR/RTS to EN and BOOT)
    console.rts = False
    try:
        console.open()
    except serial.SerialException as exc:
        raise NodeToolError(
            port_error_message(args.port, exc if isinstance(exc, OSError) else OSError(str(exc)))
        ) from None
    _say(f"serial console of {args.port} at {args.baudrate} baud; Ctrl-C stops")
    deadline = None if args.duration is None else time.monotonic() + args.duration
    pending = ""
    try:
        while deadline is None or time.monotonic() < deadline:
            try:
                data = console.read(4096)
            except serial.SerialException:
                raise NodeToolError(f"{args.port} went away (unplugged?).") from None
            if data:
                text = data.decode(errors="replace").replace("\r\n", "\n")
                sys.stdout.write(text)
                pending += text
                *complete, pending = pending.split("\n")
                for line in complete:  # the node's LINK lines, said in the technician's words too
                    advice = explain(line)
                    if advice:
                        sys.stdout.write(advice + "\n")
                sys.stdout.flush()
    finally:
        console.close()
    return 0


def run_setup(args: argparse.Namespace) -> int:
    from gateway.technician.setup import SetupPlan
    from gateway.technician.setup import run_setup as setup

    try:
        plan = SetupPlan(
            port=args.port,
            config=node_config_from(args),
            baud=args.baudrate,
            wait=args.timeout,
            image=_image(args),
            flash_baud=args.flash_baudrate,
            manual_boot=args.manual_boot,
            source=args.app,
            compile_modules=not args.source,
            reassign=args.reassign,
            watch_broker=args.watch_broker,
            watch_user=args.watch_user,
            watch_password_env=args.watch_password_env,
            timeout=args.check_for,
        )
        verdict = setup(plan, _say)
    except NodeToolError as exc:
        print(f"FAIL  {args.id}", flush=True)
        return _fail(exc)
    for line in verdict.lines():
        _say(line)
    return 0 if verdict.passed else 1
