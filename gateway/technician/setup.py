"""`cityedge node setup`: flash (optional), deploy, provision, reset, then wait for the node on the broker and
give a verdict a technician can read on a ladder."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.technician import FIRMWARE, NodeToolError
from gateway.technician.console import ConsoleReader
from gateway.technician.deploy import deploy
from gateway.technician.flash import FirmwareImage, flash
from gateway.technician.provision import check_owner, provision
from gateway.technician.serial_board import Board
from gateway.technician.watch import SENSOR_KEYS, BrokerOptions, NodeSeen, reading_words, rssi_words, watch

PORT_RETURN_S = 15.0  # a board with native USB drops off the bus while it resets after flashing


PROGRESS_S = 10.0  # seconds between "waiting for ..." lines during the check


@dataclass
class SetupPlan:
    port: str
    config: dict[str, Any]  # the node's config.json, secrets included
    baud: int = 115200
    wait: float = 10.0
    image: FirmwareImage | None = None
    flash_baud: int = 460800
    manual_boot: bool = False
    source: Path = FIRMWARE
    compile_modules: bool = True
    reassign: bool = False
    watch_broker: str | None = None  # HOST:PORT where this laptop reaches the node's broker, if not the node's
    watch_user: str | None = None  # the technician's own login for the check; None: the node's own
    watch_password_env: str | None = None
    timeout: float = 120.0


@dataclass
class Verdict:
    node: str
    passed: bool
    reasons: list[str] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # said with the verdict; they do not fail it

    def lines(self) -> list[str]:
        head = f"{'PASS' if self.passed else 'FAIL'}  {self.node}"
        out = [head + (f": {self.reasons[0]}" if self.reasons else "")]
        out += [f"  {reason}" for reason in self.reasons[1:]]
        out += [f"  {name:<9} {value}" for name, value in self.facts]
        out += [f"  warning: {warning}" for warning in self.warnings]
        return out


def judge(config: dict[str, Any], seen: NodeSeen, waited: float, broker: BrokerOptions, port: str = "PORT") -> Verdict:
    node = config["id"]
    verdict = Verdict(node, passed=False)
    info, health, reading = seen.info or {}, seen.health or {}, seen.telemetry
    if seen.first_seen is None:
        verdict.reasons = [
            f"nothing from the node on {broker} within {waited:.0f} s.",
            f"Check the WiFi name and password (the node joins {config['wifi']['ssid']}),",
            "that the broker address is right from the node's network, and the broker user and password.",
        ]
        return verdict
    if reading is None:
        verdict.reasons = [f"the node is {seen.status or 'connected'} but sent no reading within {waited:.0f} s."]
    if info.get("safe_mode"):
        why = info.get("safe_mode_reason") or "it reset three times in a row soon after starting"
        verdict.reasons.append(
            f"the node is in SAFE MODE ({why}): sensors are off. Its console shows the error before each reset "
            f"(cityedge node monitor --port {port}); fix that, then run setup again (it clears the count)."
        )
    verdict.reasons += [f"set-up problem: {p}" for p in info.get("problems", [])]
    verdict.reasons += sensor_failures(config, (reading or {}).get("errors") or {})
    expected = [k for s in config.get("sensors", []) for k in SENSOR_KEYS.get(s["type"], [])]
    reported = info.get("sensors")
    if isinstance(reported, list):
        verdict.reasons += [
            f"sensor {k} was provisioned but the node does not report it" for k in expected if k not in reported
        ]
    verdict.passed = not verdict.reasons
    if verdict.passed:
        verdict.reasons = [f"reporting on {broker} ({waited:.1f} s after reset)"]
    verdict.facts = [
        ("firmware", f"{info.get('firmware', health.get('firmware', '?'))} on MicroPython {info.get('python', '?')}"),
        ("sensors", ", ".join(map(str, reported)) if isinstance(reported, list) and reported else "none"),
        ("RSSI", rssi_words(health.get("rssi"))),
        ("reading", reading_words(reading.get("values") or {}) if reading else "none"),
    ]
    return verdict


def sensor_failures(config: dict[str, Any], errors: dict[str, str]) -> list[str]:
    """One line per failing sensor, by the name it was provisioned with."""
    lines: list[str] = []
    left = dict(errors)
    for sensor in config.get("sensors", []):
        keys = [k for k in SENSOR_KEYS.get(sensor["type"], []) if k in left]
        if not keys:
            continue
        why = left[keys[0]]
        for key in keys:
            del left[key]
        if "ENODEV" in why or "Errno 19" in why:
            why = "does not answer: check its wiring, power and address"
        elif "ETIMEDOUT" in why or "Errno 110" in why:
            why = "timed out: check its wiring"
        else:
            why = f"failed: {why}"
        lines.append(f"sensor {sensor['type']} ({', '.join(keys)}) {why}")
    lines += [f"sensor value {key} failed: {why}" for key, why in left.items()]
    return lines


def run_setup(plan: SetupPlan, say: Callable[[str], None]) -> Verdict:
    config = plan.config
    say(f"CityEdge node setup: {config['id']} on {plan.port}")
    if plan.image is not None:
        say(f"1 flash      {plan.image.describe()}")
        flash(plan.port, plan.image, baud=plan.flash_baud, manual_boot=plan.manual_boot)
        _wait_for_port(plan.port)
    board = Board(plan.port, plan.baud, plan.wait)
    ours: str | None = None
    try:
        board.open()
    except NodeToolError as exc:
        if plan.image is None and "does not answer as MicroPython" in str(exc):
            raise NodeToolError(
                f"The board on {plan.port} has no MicroPython yet (a new board?). Run setup again with "
                "--firmware IMAGE.bin to flash it first."
            ) from None
        raise
    try:
        if plan.image is None:
            say(
                f"1 flash      skipped (MicroPython {board.info().version_text} already on the board; "
                "--firmware flashes it)"
            )
        check_owner(board, config["id"], reassign=plan.reassign)  # before anything is written to it
        report = deploy(board, plan.source, compile_modules=plan.compile_modules)
        ours = report.board.unique_id
        say(f"2 deploy     {report.summary()}  [{report.board.describe()}]")
        before = provision(board, config, reassign=plan.reassign)
        moved = f"; was {before}" if before else ""
        say(f"3 provision  config.json written and verified{moved}")
        broker = _check_broker(plan)
        say(f"4 reset      watching {config.get('topic', 'nodes')}/{config['id']} on {broker}")
        started: list[float] = []
        console = ConsoleReader(plan.port, plan.baud)

        def reset() -> None:
            board.reset()
            started.append(time.monotonic())
            console.start()  # the node's own account of its WiFi and broker, as it boots

        waiting = Waiting(config["id"], broker, plan.timeout, console, say, started)
        try:
            seen = asyncio.run(
                watch(
                    broker,
                    config.get("topic", "nodes"),
                    config["id"],
                    lambda line: say(f"             {line}"),
                    done=waiting.done,
                    duration=plan.timeout,
                    ready=reset,
                )
            )
        finally:
            if started:
                console.stop()
    finally:
        board.close()
    waited = time.monotonic() - started[0] if started else 0.0
    verdict = judge(config, seen, waited, broker, plan.port)
    failure = console.failure() if started else None
    if failure and not verdict.passed:
        verdict.reasons = [failure]  # the node said why: that, not every possible cause
    for other in sorted(seen.other_boards(ours)):
        verdict.warnings.append(
            f"another board ({other}) is online as {config['id']} too: two boards with one id overwrite each "
            "other's status and readings; give one of them another id (cityedge node provision --id ... --reassign)"
        )
    return verdict


class Waiting:
    """While the check waits: done when the node has reported, or its console says why it cannot; what is
    awaited and the time left, every PROGRESS_S seconds."""

    def __init__(
        self,
        node: str,
        broker: BrokerOptions,
        limit: float,
        console: ConsoleReader,
        say: Callable[[str], None],
        started: list[float],
    ) -> None:
        self.node, self.broker, self.limit, self.console, self.say, self.started = (
            node,
            broker,
            limit,
            console,
            say,
            started,
        )
        self.next_word = PROGRESS_S

    def done(self, seen: NodeSeen) -> bool:
        if seen.complete() or self.console.failure() is not None:
            return True
        if not self.started:
            return False
        waited = time.monotonic() - self.started[0]
        if waited >= self.next_word:
            self.next_word += PROGRESS_S
            state = self.console.state
            link = f"; its console says: {state[1]}" if state else ""
            self.say(
                f"             waiting for {self.node}'s first reading on {self.broker}{link} "
                f"({max(0, self.limit - waited):.0f} s left)"
            )
        return False


def _check_broker(plan: SetupPlan) -> BrokerOptions:
    """How this laptop watches for the node: with the technician's own login if given, else with the node's."""
    node_broker = plan.config["broker"]
    address = plan.watch_broker or f"{node_broker['host']}:{node_broker['port']}"
    if plan.watch_user:
        return BrokerOptions.parse(address, username=plan.watch_user, password_env=plan.watch_password_env)
    return BrokerOptions.parse(
        address, username=node_broker.get("user"), password=node_broker.get("password"), whose="the node's"
    )


def _wait_for_port(port: str) -> None:
    deadline = time.monotonic() + PORT_RETURN_S
    while time.monotonic() < deadline:
        if Path(port).exists():
            time.sleep(1.0)  # MicroPython's first boot formats the filesystem
            return
        time.sleep(0.2)
    raise NodeToolError(f"{port} did not come back after flashing. Unplug the node, plug it in again and rerun setup.")
