"""`cityedge hil serve|ctl|check`: run an emulated site and change its faults while it runs."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from gateway.cli.errors import HIL_EXTRA, UsageError, needs
from gateway.cli.options import broker_address, seconds


def register(sub: Any) -> None:
    p = sub.add_parser("hil", help="hardware-in-the-loop: emulated devices and scenarios")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    serve = actions.add_parser("serve", help="start the emulated site of a scenario and keep it running")
    serve.add_argument("scenario", type=Path, help="the scenario file (YAML)")
    serve.add_argument("--control", type=Path, metavar="SOCKET", help="control socket path")
    serve.add_argument(
        "--gateway-config", type=Path, metavar="FILE", help="write a gateway configuration that polls this site"
    )
    serve.add_argument("--duration", type=seconds, metavar="SECONDS", help="stop after this long")
    serve.add_argument("--no-timeline", action="store_true", help="do not play the scenario's timeline")
    serve.add_argument("--json", action="store_true", help="print the endpoints as one JSON line")
    serve.set_defaults(handler=needs(HIL_EXTRA, run_serve))

    run = actions.add_parser("run", help="run a scenario: site, gateway and broker together; check expectations")
    run.add_argument("scenario", type=Path, help="the scenario file (YAML)")
    run.add_argument("--broker", metavar="HOST[:PORT]", help="use this broker instead of starting mosquitto")
    run.add_argument("--duration", type=seconds, metavar="SECONDS", help="override the scenario's duration")
    run.add_argument("--json", action="store_true", help="the report as JSON")
    run.set_defaults(handler=needs(HIL_EXTRA, run_run))

    image = actions.add_parser(
        "image", help="write a firmware image for rehearsing on the emulated board (not for a real ESP32)"
    )
    image.add_argument("--out", type=Path, required=True, metavar="FILE", help="where to write the image")
    image.add_argument("--chip", choices=["esp32", "esp32s2", "esp32s3", "esp32c3", "esp32c6"], default="esp32",
                       help="the chip it is built for")  # fmt: skip
    image.add_argument("--version", default="v1.24.1-rehearsal", help="the version the emulated board reports")
    image.set_defaults(handler=run_image)

    board = actions.add_parser("board", help="an emulated ESP32 with MicroPython on a serial port, for the node tools")
    board.add_argument("--dir", type=Path, required=True, help="the board's state: flash/, console.log, the port link")
    board.add_argument(
        "--network", metavar="HOST:PORT", help="where the board's WiFi leads: every TCP connection goes there"
    )
    board.add_argument("--wifi", metavar="SSID", help="the only WiFi the board can join (default: any)")
    board.add_argument("--wifi-password-env", metavar="VAR", help="environment variable with that WiFi's password")
    board.add_argument(
        "--chip", choices=["esp32", "esp32s2", "esp32s3", "esp32c3", "esp32c6"], default="esp32", help="the chip it is"
    )
    board.add_argument("--blank", action="store_true", help="a new board: no MicroPython until it is flashed")
    board.add_argument("--duration", type=seconds, metavar="SECONDS", help="stop after this long")
    board.add_argument("--json", action="store_true", help="print the port and flash directory as one JSON line")
    board.set_defaults(handler=run_board)

    schema = actions.add_parser("schema", help="JSON Schema of scenario files, for editors")
    schema.set_defaults(handler=run_schema)

    check = actions.add_parser("check", help="validate a scenario file")
    check.add_argument("scenario", type=Path, help="the scenario file (YAML)")
    check.set_defaults(handler=run_check)

    ctl = actions.add_parser("ctl", help="change a running site (faults, reboots, stimuli, values)")
    ctl.add_argument("--control", type=Path, metavar="SOCKET", required=True, help="the site's control socket")
    ctl.add_argument(
        "op",
        choices=["status", "fault", "clear", "reboot", "drop", "refuse", "accept", "noise", "stimulus", "set", "get"],
        help="what to do",
    )
    ctl.add_argument("target", nargs="?", help="device id (or link id for drop, refuse, accept, noise)")
    ctl.add_argument("args", nargs="*", help="key=value pairs; for set: POINT VALUE; for stimulus: NAME key=value")
    ctl.set_defaults(handler=run_ctl)


def default_socket(name: str) -> Path:
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    return base / f"cityedge-hil-{name}.sock"


def run_image(args: argparse.Namespace) -> int:
    from hil.esp32.images import rehearsal_image

    args.out.write_bytes(rehearsal_image(args.chip, args.version))
    print(
        f"wrote {args.out}: MicroPython {args.version} for {args.chip}, for the emulated board only "
        "(it holds no MicroPython: a real ESP32 would not boot it)"
    )
    return 0


def run_run(args: argparse.Namespace) -> int:
    from hil.site.runner import run_scenario
    from hil.site.scenario import load_scenario

    loaded = load_scenario(args.scenario)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    def progress(line: str) -> None:  # as it happens; with --json on stderr, so stdout stays one document
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    report = asyncio.run(run_scenario(loaded, broker_address(args.broker), args.duration, progress))
    if args.json:
        print(
            json.dumps(
                {
                    "scenario": report.scenario,
                    "passed": report.passed,
                    "expectations": [{"line": v.line(), "passed": v.passed} for v in report.verdicts],
                },
                indent=2,
            )
        )
    else:
        print(report.text())
    return 0 if report.passed else 1


def run_board(args: argparse.Namespace) -> int:
    return asyncio.run(_board(args))


async def _board(args: argparse.Namespace) -> int:
    from hil.esp32.emulated_board import EmulatedBoard

    network = None
    if args.network:
        from gateway.technician.port import host_port

        try:
            host, port = host_port(args.network)
        except ValueError:
            host, port = "", None
        if not host or port is None:
            raise UsageError(f"--network takes HOST:PORT, not {args.network!r}")
        network = (host, port)
    wifi = None
    if args.wifi:
        password = os.environ.get(args.wifi_password_env, "") if args.wifi_password_env else ""
        wifi = (args.wifi, password)
    args.dir.mkdir(parents=True, exist_ok=True)
    board = EmulatedBoard(args.dir, network=network, wifi=wifi, chip=args.chip, blank=args.blank)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    pressed: set[asyncio.Task[None]] = set()

    def press_reset() -> None:  # SIGHUP: the EN/RST button
        task = asyncio.create_task(board.power_cycle())
        pressed.add(task)
        task.add_done_callback(pressed.discard)

    loop.add_signal_handler(signal.SIGHUP, press_reset)
    await board.start()
    try:
        info = board.describe()
        if args.json:
            print(json.dumps(info), flush=True)
        else:
            state = "MicroPython" if info["micropython"] else "blank: flash MicroPython first"
            print(f"emulated {args.chip} board on {info['port']} ({state}; pid {info['pid']})", flush=True)
            print("  Ctrl-C stops it", flush=True)
            print(f"  flash directory {info['flash']}", flush=True)
            print(f"  WiFi leads to   {info['network'] or 'nowhere (no --network)'}", flush=True)
            print(f"  e.g. cityedge node deploy --port {info['port']}", flush=True)
            print(f"  kill -HUP {info['pid']} presses its reset button", flush=True)
        if args.duration:
            loop.call_later(args.duration, stop.set)
        await stop.wait()
    finally:
        await board.stop()
    return 0


def run_schema(args: argparse.Namespace) -> int:
    from hil.site.scenario import Scenario

    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **Scenario.model_json_schema(),
        "title": "CityEdge HIL scenario",
    }
    print(json.dumps(schema, indent=2))
    return 0


def run_check(args: argparse.Namespace) -> int:
    from hil.site.scenario import load_scenario

    loaded = load_scenario(args.scenario)
    sc = loaded.scenario
    print(
        f"{args.scenario}: OK ({len(sc.links)} links, {len(sc.devices)} devices, "
        f"{len(sc.timeline)} steps, {len(sc.expect)} expectations)"
    )
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from hil.site.scenario import load_scenario

    loaded = load_scenario(args.scenario)
    return asyncio.run(_serve(args, loaded))


async def _serve(args: argparse.Namespace, loaded: Any) -> int:
    from hil.site.control import ControlServer
    from hil.site.emulated import Site
    from hil.site.scenario import gateway_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    site = Site(loaded)
    socket_path = args.control or default_socket(loaded.scenario.name)
    control = ControlServer(site, socket_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await site.start()
    tasks: list[asyncio.Task[Any]] = []
    try:
        await control.start()
        if args.gateway_config:
            data = gateway_config(loaded, site.endpoint_addresses())
            args.gateway_config.write_text(yaml.safe_dump(data, sort_keys=False))
        _print_endpoints(site, socket_path, args)
        if not args.no_timeline:
            tasks.append(asyncio.create_task(site.run_timeline()))
        if args.duration:
            loop.call_later(args.duration, stop.set)
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await control.stop()
        await site.stop()
    return 0


def _print_endpoints(site: Any, socket_path: Path, args: argparse.Namespace) -> None:
    info = site.describe()
    info["control"] = str(socket_path)
    if args.gateway_config:
        info["gateway_config"] = str(args.gateway_config)
    if args.json:
        print(json.dumps(info), flush=True)
        return
    print(f"site {info['scenario']} running (pid {info['pid']}); Ctrl-C stops it", flush=True)
    for link in info["links"]:
        print(f"  link {link['id']:<14} {link['type']:<15} {link['address']}  devices: {', '.join(link['devices'])}")
    print(f"  control socket  {socket_path}")
    print(f"    e.g. cityedge hil ctl --control {socket_path} fault DEVICE timeout=on")
    if args.gateway_config:
        print(f"  gateway config  {args.gateway_config}")
    print(flush=True)


def _pairs(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"expected key=value, got {item!r}")
        out[key] = yaml.safe_load(value) if value else ""
    return out


def _ctl_message(args: argparse.Namespace) -> dict[str, Any]:
    op, target, rest = args.op, args.target, args.args
    needs_target = op not in ("status", "clear")
    if needs_target and not target:
        raise UsageError(f"ctl {op} needs a {'link' if op in ('drop', 'refuse', 'accept', 'noise') else 'device'} id")
    if op == "fault":
        return {"op": op, "device": target, "set": _pairs(rest)}
    if op == "clear":
        return {"op": op, **({"device": target} if target else {})}
    if op == "reboot":
        return {"op": op, "device": target, **_pairs(rest)}
    if op in ("drop", "noise"):
        return {"op": op, "link": target, **_pairs(rest)}
    if op in ("refuse", "accept"):
        return {"op": "refuse", "link": target, "on": op == "refuse"}
    if op == "stimulus":
        if not rest:
            raise UsageError("ctl stimulus DEVICE NAME [key=value ...]")
        return {"op": op, "device": target, "name": rest[0], "args": _pairs(rest[1:])}
    if op == "set":
        if len(rest) != 2:
            raise UsageError("ctl set DEVICE POINT VALUE")
        return {"op": op, "device": target, "point": rest[0], "value": yaml.safe_load(rest[1])}
    if op == "get":
        if len(rest) != 1:
            raise UsageError("ctl get DEVICE POINT")
        return {"op": op, "device": target, "point": rest[0]}
    return {"op": op}


def run_ctl(args: argparse.Namespace) -> int:
    from hil.site.control import request

    message = _ctl_message(args)
    try:
        answer = asyncio.run(request(args.control, message))
    except (FileNotFoundError, ConnectionRefusedError):
        raise UsageError(f"no site is listening on {args.control} (is `cityedge hil serve` running?)") from None
    if not answer.get("ok"):
        print(f"cityedge: error: {answer.get('error')}", file=sys.stderr)
        return 1
    data = answer.get("data")
    if data is None:
        print("ok")
    else:
        print(json.dumps(data, indent=2) if isinstance(data, dict | list) else data)
    return 0
