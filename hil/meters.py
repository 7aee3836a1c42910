"""Emulated serial-line meters and sensors for sites: IEC 62056-21 meters, M-Bus meters, ASCII sensors,
each family on its own emulated line (`PtyLine` and `SerialBus`), built from the same profiles the gateway
reads them with. `Site` drives them like its Modbus devices: faults, values, stats."""

from __future__ import annotations

import os
from typing import Any, Protocol

from gateway.points.types import Value
from gateway.profiles.expand import ResolvedProfile
from hil.ascii.sensor import AsciiSensor, SensorFaults
from hil.iec62056.meter import MeterFaults, ModeCMeter
from hil.mbus.meter import MbusFaults, MbusMeter
from hil.ptyline import PtyLine
from hil.serialbus import SerialBus

LINE_TYPES = {"iec62056-serial": "iec62056", "mbus-serial": "mbus", "ascii-serial": "ascii"}
LINE_DEFAULTS = {  # baudrate, parity, bytesize of each family's lines
    "iec62056-serial": (300, "E", 7),
    "mbus-serial": (2400, "E", 8),
    "ascii-serial": (9600, "N", 8),
}
FAULTS: dict[str, type[Any]] = {"iec62056": MeterFaults, "mbus": MbusFaults, "ascii": SensorFaults}
OPTIONS = {
    "iec62056": {"identification", "units", "rates"},
    "mbus": {"ident", "manufacturer", "version", "medium", "per_telegram", "rates"},
    "ascii": {"period", "rates"},
}


class SerialMeter(Protocol):
    faults: Any
    values: dict[str, Value]

    def feed(self, data: bytes, now: float) -> Any: ...


def make_meter(protocol: str, resolved: ResolvedProfile, line: PtyLine, address: Any, options: dict[str, Any]) -> Any:
    if protocol == "iec62056":
        return ModeCMeter(
            resolved, line, address="" if address is None else str(address),
            identification=options.get("identification"), units=options.get("units"),
        )  # fmt: skip
    if protocol == "mbus":
        primary = address if isinstance(address, int) else None
        ident = (
            str(address).split(".")[0]
            if isinstance(address, str)
            else options.get("ident", f"{10000000 + (address or 0)}")
        )
        return MbusMeter(
            resolved, line, primary=primary, ident=ident, manufacturer=options.get("manufacturer"),
            version=options.get("version"), medium=options.get("medium"), per_telegram=options.get("per_telegram", 0),
        )  # fmt: skip
    return AsciiSensor(
        resolved, line, address="" if address is None else str(address), period=options.get("period", 1.0)
    )


class MeterLine:
    """One emulated serial line with its meters: what `Site` sees as the link's endpoint."""

    def __init__(
        self, link_type: str, baudrate: int | None, parity: str | None, bytesize: int | None, wire: bool
    ) -> None:
        base, par, size = LINE_DEFAULTS[link_type]
        self.protocol = LINE_TYPES[link_type]
        self.line = PtyLine(
            baudrate or base,
            parity or par,
            1,
            bytesize=bytesize or size,
            turnaround=0.0,
            wire_timing=wire,
            follow_speed=self.protocol == "iec62056",
        )
        self.bus = SerialBus(self.line)
        self.meters: list[Any] = []

    @property
    def address(self) -> str:
        return self.line.gateway_path

    def attach(self, meter: Any) -> None:
        self.meters.append(meter)
        self.bus.attach(meter)

    async def start(self) -> None:
        await self.line.start()
        await self.bus.start()
        for meter in self.meters:
            if isinstance(meter, AsciiSensor):
                meter.start(self.bus)

    async def stop(self) -> None:
        for meter in self.meters:
            if isinstance(meter, AsciiSensor):
                await meter.stop()
        await self.bus.stop()
        await self.line.stop()

    def drop_connections(self) -> int:
        return 0

    async def refuse(self, on: bool) -> None:
        raise ValueError("a serial line has no connections to refuse; silence its devices with a fault instead")

    def noise(self, count: int) -> None:
        self.line.inject_noise(os.urandom(count))


def stats_of(meter: Any) -> dict[str, Any]:
    stats = getattr(meter, "stats", None)
    if stats is not None:
        return {k: v for k, v in vars(stats).items() if not isinstance(v, list)}
    return {"lines": getattr(meter, "lines", 0)}
