"""The Modbus driver: profiles with tables and addresses, links over TCP and RS-485, merged reads.

Everything Modbus the gateway knows comes in through here: the profile fields and
limits (`profile.py`), the link settings (`links.py`), one transport per link
(`transport.py`, framing in `framing.py`), the read planner with what it learns from
devices: where not to merge (exception 02) and how long a read may be (exception 03, or
long reads that time out while short ones are answered) (`planner.py`), the register
codec (`codec.py`) and single-point reads and writes (`pointio.py`). See README.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from gateway.points.types import DataType, PointValueError, Value
from gateway.profiles.expand import PointSpec
from gateway.profiles.model import Profile
from gateway.south.driver import (
    Issue,
    LinkDriver,
    LinkTransport,
    PolledDevice,
    ProfileProtocol,
    Report,
    Timeout,
    Transact,
    register,
)
from gateway.south.modbus import pointio
from gateway.south.modbus.codec import CodecError
from gateway.south.modbus.errors import ModbusExceptionResponse
from gateway.south.modbus.links import ModbusRtuLink, ModbusRtuTcpLink, ModbusTcpLink
from gateway.south.modbus.pdu import check_response
from gateway.south.modbus.planner import ReadPlanner, ReadRequest
from gateway.south.modbus.profile import (
    Limits,
    ModbusPoint,
    ModbusProfile,
    Table,
    build_place,
    forbidden_ranges,
    place,
    point_issues,
)
from gateway.south.modbus.transport import Transport, make_transport
from gateway.south.modbus.wire import read_time

ILLEGAL_DATA_ADDRESS = 2
ILLEGAL_DATA_VALUE = 3  # what many meters answer to a read longer than they take

log = logging.getLogger("cityedge.modbus")


@dataclass(slots=True)
class ModbusState:
    """What the driver keeps per device: its unit id and its read planner (with what it learnt)."""

    unit: int
    planner: ReadPlanner
    guess: tuple[Table, int, int] | None = None  # after a timeout: (table, length tried, length that failed)


class ModbusDriver(ProfileProtocol, LinkDriver):
    name: ClassVar[str] = "modbus"
    profile_model = ModbusProfile
    point_fields = ModbusPoint
    link_models = (ModbusTcpLink, ModbusRtuTcpLink, ModbusRtuLink)

    # -- profiles ---------------------------------------------------------------------------------

    def default_type(self, fields: Mapping[str, Any]) -> DataType:
        table = fields.get("table")
        return DataType.BOOL if table is not None and Table(table).is_bits else DataType.UINT16

    def attributes(self, profile: Profile, name: str, fields: dict[str, Any], base: int, bad: Report) -> Any:
        return build_place(profile, fields, base, bad)

    def check_points(self, profile: Profile, points: Sequence[PointSpec]) -> Iterable[Issue]:
        return point_issues(profile, points)

    def summary(self, profile: Any) -> list[str]:
        limits: Limits = profile.limits
        return [
            f"limits: {limits.max_registers} registers per read, gap {limits.max_gap}, "
            f"{'1' if limits.addressing else '0'}-based addresses, pause {limits.pause:g}s"
        ]

    def columns(self, profile: Any, point: PointSpec) -> dict[str, Any]:
        where, codec = place(point), place(point).codec
        scale = ""
        if codec is not None and (codec.scale != 1 or codec.offset != 0):
            scale = f"x{codec.scale:g}" + (f"{codec.offset:+g}" if codec.offset else "")
        return {
            "table": where.table.value,
            "address": where.address + profile.limits.addressing,
            "type": point.dtype.value
            + (f"[{codec.length}]" if codec and codec.length else "")
            + (f".{codec.bit}" if codec and point.dtype.value == "bit" else ""),
            "byte_order": codec.byte_order.value if codec and codec.registers > 1 else "",
            "scale": scale,
        }

    # -- links and devices ------------------------------------------------------------------------

    def transport(self, link: Any) -> LinkTransport:
        return make_transport(link)

    def describe_link(self, link: Any) -> str:
        if isinstance(link, ModbusRtuLink):
            return f"{link.type} {link.device} {link.baudrate} {link.bytesize}{link.parity}{link.stopbits}"
        return f"{link.type} {link.host}:{link.port}"

    def address(self, device: Any) -> tuple[Any, str | None]:
        if device.unit is None:
            return None, "missing required key 'unit' (the Modbus unit id of the device, 0-255)"
        return device.unit, None

    def prepare(self, device: PolledDevice, address: Any) -> ModbusState:
        limits: Limits = device.resolved.limits
        device.pause = limits.pause  # type: ignore[attr-defined]
        return ModbusState(address, ReadPlanner(limits, forbidden_ranges(limits)))

    def carry_over(self, device: PolledDevice, before: Any) -> None:
        state: ModbusState = device.protocol_state
        if isinstance(before, ModbusState) and before.unit == state.unit:
            state.planner.lessons = before.planner.lessons
            self._note(device)

    def plan(self, device: PolledDevice, points: Sequence[PointSpec]) -> list[ReadRequest]:
        state: ModbusState = device.protocol_state
        return state.planner.plan(points)

    async def transact(self, transport: LinkTransport, device: PolledDevice, request: Any) -> bytes:
        """A planned read, or a request PDU from a point read or write: the answer's checked data."""
        assert isinstance(transport, Transport)
        state: ModbusState = device.protocol_state
        pdu = request.pdu if isinstance(request, ReadRequest) else request
        answer = await transport.transact(state.unit, pdu, device.timeout)
        return check_response(pdu, answer)

    def replan(self, device: PolledDevice, request: Any, error: Exception) -> list[ReadRequest] | None:
        """A merged read the device would not answer, read otherwise now, and remembered:

        - exception 02 (illegal data address): never merge across its middle again;
        - exception 03 (illegal data value; many meters say so for a read longer than they take): reads of at
          most half its length from now on;
        - a timeout: half its length tried once; kept when that is answered (see `settle`).
        """
        state: ModbusState = device.protocol_state
        if not isinstance(request, ReadRequest):
            return None
        planner = state.planner
        points = [p for p, _ in request.points]
        if isinstance(error, ModbusExceptionResponse) and error.code == ILLEGAL_DATA_ADDRESS:
            if not planner.split(request):
                return None
            self._note(device)
            return planner.plan(points)
        shorter = planner.shorter(request)
        if shorter is None:
            return None
        if isinstance(error, ModbusExceptionResponse) and error.code == ILLEGAL_DATA_VALUE:
            self._learn(device, request.table, shorter, f"exception 03 on a read of {request.count}")
            return planner.plan(points)
        if isinstance(error, Timeout):
            state.guess = (request.table, shorter, request.count)
            return planner.plan(points, cap=shorter)
        return None

    def settle(self, device: PolledDevice, kept: bool) -> None:
        state: ModbusState = device.protocol_state
        if state.guess is not None and kept:
            table, shorter, failed = state.guess
            self._learn(device, table, shorter, f"no answer to a read of {failed}, answers to reads of {shorter}")
        state.guess = None

    def _learn(self, device: PolledDevice, table: Table, longest: int, why: str) -> None:
        planner: ReadPlanner = device.protocol_state.planner
        planner.keep_shorter(table, longest)
        what = "max_bits" if table.is_bits else "max_registers"
        log.warning(
            "%s: reads at most %d %s from now on (%s); set limits.%s: %d in profile %s to start that way",
            device.id,
            planner.top(table),
            "bits" if table.is_bits else "registers",
            why,
            what,
            planner.top(table),
            device.resolved.profile.name,
        )
        self._note(device, why)

    def _note(self, device: PolledDevice, why: str | None = None) -> None:
        """What the planner learned, in the device's health: the limits it keeps to and why."""
        planner: ReadPlanner = device.protocol_state.planner
        for bits, what in ((False, "max_registers"), (True, "max_bits")):
            if bits in planner.lessons.longest:
                entry = {"value": planner.lessons.longest[bits], "profile": device.resolved.profile.name}
                if why is not None or what not in device.learned:
                    entry["why"] = why or "learned before the device restarted"
                else:
                    entry["why"] = device.learned[what]["why"]
                device.learned[what] = entry
        if planner.splits:
            device.learned["no_merge_across"] = {t.value: list(a) for t, a in planner.splits.items()}

    def decode(self, device: PolledDevice, request: Any, answer: Any) -> None:
        """Store the values carried by one answer (register bytes or packed bits)."""
        values, errors = device.values, device.errors
        data: bytes = answer
        if request.table.is_bits:
            for p, offset in request.points:
                values[p.name] = bool(data[offset >> 3] >> (offset & 7) & 1)
                errors.pop(p.name, None)
            return
        for p, offset in request.points:
            try:
                values[p.name] = place(p).codec.decode(data, offset)  # type: ignore[union-attr]
                errors.pop(p.name, None)
            except PointValueError as exc:
                values.pop(p.name, None)
                errors[p.name] = exc.reason

    async def write(self, transact: Transact, device: PolledDevice, point: PointSpec, value: Value) -> None:
        await pointio.write_point(transact, point, value)

    async def read(self, transact: Transact, device: PolledDevice, point: PointSpec) -> Value:
        return await pointio.read_point(transact, point)

    def describe_request(self, device: Any, request: Any) -> dict[str, Any]:
        state: ModbusState = device.protocol_state
        return {
            "unit": state.unit,
            "function": request.function,
            "table": request.table.value,
            "start": request.start,
            "count": request.count,
            "points": list(request.point_names),
        }

    def wire_time(self, link: Any, device: PolledDevice, request: Any) -> float | None:
        """On a serial bus: the read's characters and silences, and the pause the device needs after it."""
        if not isinstance(link, ModbusRtuLink) or not isinstance(request, ReadRequest):
            return None
        wire = read_time(request.count, request.table.is_bits, link.baudrate, link.parity, link.stopbits, link.bytesize)
        return wire + float(getattr(device, "pause", 0.0))

    def plan_columns(self) -> tuple[str, ...]:
        return ("function", "table", "start", "count")

    def plan_cell(self, column: str, value: Any) -> str:
        return f"{value:02d}" if column == "function" else str(value)


__all__ = ["CodecError", "ModbusDriver"]

DRIVER = ModbusDriver()
register(DRIVER)
