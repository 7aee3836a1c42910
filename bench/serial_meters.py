"""Serial meters against their protocols' wire-time formulas: a mode C readout at each speed a meter offers,
and an M-Bus cycle over a segment of meters at each segment speed, on wire-timed emulated lines.

IEC 62056-21 mode C, one session (7E1: 10 bits a character):
    T = (sign-on + identification + acknowledgement) characters at 300 baud + 3 reaction times
        + readout characters at the switched speed        (reaction: 200 ms, or 20 ms for a lowercase 3rd letter)
M-Bus, one meter (8E1: 11 bits a character):
    T = (SND_NKE 5 + E5 1 + REQ_UD2 5 + RSP_UD n) characters + 2 x 11 bit times (the meter's shortest reaction)

"gateway ms" is the time the line waited for the driver: from an answer's last byte reaching the gateway's port
to the driver's next request (for mode C less the reaction time the standard makes it wait). "emulator late ms"
is how much later than due the emulated line delivered the ends of messages (asyncio timers wake up to a
millisecond late), measured by the line itself: the emulation's own cost, which a real line does not have.

Run: .venv/bin/python bench/serial_meters.py [--quick]   (or bench/run for everything)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import report  # noqa: E402
from gateway.config.model import DeviceConfig  # noqa: E402
from gateway.core.device import Device  # noqa: E402
from gateway.profiles.registry import ProfileRegistry, resolve  # noqa: E402
from gateway.south.iec62056.driver import DRIVER as IEC  # noqa: E402
from gateway.south.iec62056.driver import IecTransport, session_time  # noqa: E402
from gateway.south.iec62056.links import Iec62056Link  # noqa: E402
from gateway.south.iec62056.telegram import CHAR_OF, REACTION, sign_on  # noqa: E402
from gateway.south.mbus.driver import DRIVER as MBUS  # noqa: E402
from gateway.south.mbus.driver import MbusTransport  # noqa: E402
from gateway.south.mbus.links import MbusLink  # noqa: E402
from gateway.south.serialline import char_time  # noqa: E402
from hil.iec62056.meter import ModeCMeter  # noqa: E402
from hil.mbus.meter import MbusMeter  # noqa: E402
from hil.ptyline import PtyLine  # noqa: E402
from hil.serialbus import SerialBus  # noqa: E402

REGISTRY = ProfileRegistry()
LEM = resolve(REGISTRY.load("lem-em4t-ii")[0])
KAMSTRUP = resolve(REGISTRY.load("kamstrup-multical-601")[0])


def _device(profile: Any, driver: Any, link: Any, address: Any) -> Device:
    config = DeviceConfig(id="bench", profile=profile.name, link=link.id, address=address)
    return Device(config, profile, link.timeout, driver, driver.address(config)[0])


async def mode_c(baud: int, sessions: int) -> dict[str, Any]:
    line = PtyLine(300, "E", 1, bytesize=7, turnaround=0.0, wire_timing=True, follow_speed=True)
    await line.start()
    bus = SerialBus(line)
    meter = ModeCMeter(LEM, line, address="03878504", identification=f"/EMH{CHAR_OF[baud]}\\@D4EM4TIIW001--")
    meter.values.update(energy_import=1234.5, energy_export=12.3, serial_number="03878504", error_code="00000000")
    bus.attach(meter)
    await bus.start()
    link = Iec62056Link(id="bench", type="iec62056-serial", device=line.gateway_path, timeout=2.0, recovery=0.1)
    transport = IecTransport(link)
    device = _device(LEM, IEC, link, "03878504")
    request = IEC.plan(device, LEM.points)[0]
    times = []
    line.gateway_turnaround = line.late = 0.0
    try:
        for _ in range(sessions):
            start = time.perf_counter()
            await IEC.transact(transport, device, request)
            times.append(time.perf_counter() - start)
    finally:
        await transport.close()
        await bus.stop()
        await line.stop()
    chars = len(meter.telegram())
    ident = len(meter.ident_bytes)
    formula = (
        (len(sign_on("03878504")) + ident + 6) * char_time(300, "E", 1, 7)
        + 3 * REACTION
        + chars * char_time(baud, "E", 1, 7)
    )
    planned = session_time(len(sign_on("03878504")), chars, 300, baud, reaction=REACTION)  # what `cityedge plan` says
    assert abs(formula - planned - (ident - 20) * char_time(300, "E", 1, 7)) < 1e-9  # (it assumes 20 ident chars)
    measured = sum(times) / len(times)
    own = line.gateway_turnaround / sessions - REACTION  # the gateway answers once: its ACK, after the reaction time
    late = line.late / sessions
    return {"baud": baud, "chars": chars, "measured_s": measured, "formula_s": formula,
            "efficiency": formula / measured, "gateway_turnaround_s": own, "emulator_late_s": late,
            "line_efficiency": formula / (measured - late)}  # fmt: skip


async def mbus_cycle(baud: int, meters: int, cycles: int) -> dict[str, Any]:
    line = PtyLine(baud, "E", 1, turnaround=0.0, wire_timing=True)
    await line.start()
    bus = SerialBus(line)
    emulated = []
    for n in range(meters):
        meter = MbusMeter(KAMSTRUP, line, primary=n + 1, ident=f"{20000000 + n}", values={"energy": 1000.0 + n})
        bus.attach(meter)
        emulated.append(meter)
    await bus.start()
    link = MbusLink(id="bench", type="mbus-serial", device=line.gateway_path, baudrate=baud, timeout=1.0)
    transport = MbusTransport(link)
    devices = [_device(KAMSTRUP, MBUS, link, n + 1) for n in range(meters)]
    requests = [MBUS.plan(d, KAMSTRUP.points)[0] for d in devices]
    times = []
    line.gateway_turnaround = line.late = 0.0
    try:
        for _ in range(cycles):
            start = time.perf_counter()
            for device, request in zip(devices, requests, strict=True):
                await MBUS.transact(transport, device, request)
            times.append(time.perf_counter() - start)
    finally:
        await transport.close()
        await bus.stop()
        await line.stop()
    telegram = len(emulated[0].telegrams()[0]) + 12 + 9  # records, header, long-frame overhead
    char = char_time(baud, "E", 1, 8)
    per_meter = (5 + 1 + 5 + telegram) * char + 2 * 11 / baud
    measured = sum(times) / len(times)
    formula = meters * per_meter
    own = line.gateway_turnaround / cycles  # of each cycle, the time the line waited for the gateway's next request
    late = line.late / cycles
    return {"baud": baud, "meters": meters, "telegram_bytes": telegram, "measured_s": measured, "formula_s": formula,
            "efficiency": formula / measured, "gateway_turnaround_s": own, "emulator_late_s": late,
            "line_efficiency": formula / (measured - late)}  # fmt: skip


def _figures(result: dict[str, Any]) -> list[str]:
    return [
        f"{result['measured_s']:.3f}",
        f"{result['formula_s']:.3f}",
        f"{result['efficiency']:.3f}",
        f"{result['gateway_turnaround_s'] * 1000:.1f}",
        f"{result['emulator_late_s'] * 1000:.1f}",
        f"{result['line_efficiency']:.3f}",
    ]


async def main(quick: bool) -> int:
    rows, data = [], []
    for baud in (300, 600, 1200, 2400, 4800, 9600, 19200):
        result = await mode_c(baud, 1 if quick or baud <= 600 else 3)
        data.append({"protocol": "iec62056", **result})
        rows.append(["IEC 62056-21 mode C", baud, f"{result['chars']} chars", *_figures(result)])
        print(rows[-1], flush=True)
    for baud in (300, 2400, 9600, 38400):
        result = await mbus_cycle(baud, 5, 1 if quick or baud == 300 else 3)
        data.append({"protocol": "mbus", **result})
        rows.append(["M-Bus, 5 meters", baud, f"{result['telegram_bytes']} bytes each", *_figures(result)])
        print(rows[-1], flush=True)
    headers = ["what", "baud", "size", "measured s", "formula s", "formula / measured", "gateway ms",
               "emulator late ms", "formula / (measured - late)"]  # fmt: skip
    report("serial_meters", headers, rows, data)
    worst = min(d["line_efficiency"] for d in data)
    return 0 if worst >= 0.9 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one session per case")
    sys.exit(asyncio.run(main(parser.parse_args().quick)))
