"""The Modbus driver: profiles with tables and addresses, links over TCP and RS-485, merged reads.

Everything Modbus the gateway knows comes in through here: the profile fields and
limits (`profile.py`), the link settings (`links.py`), one transport per link
(`transport.py`, framing in `framing.py`), the read planner with the splits it learns
from exception 02 (`planner.py`), the register codec (`codec.py`) and single-point
reads and writes (`pointio.py`). See README.md.
"""

from __future__ import annotations

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

ILLEGAL_DATA_ADDRESS = 2


@dataclass(slots=True)
class ModbusState:
    """What the driver keeps per device: its unit id and its read planner (with the splits it learnt)."""

    unit: int
    planner: ReadPlanner


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
        """After exception 02 on a merged read: never merge across its middle again, read its halves now."""
        state: ModbusState = device.protocol_state
        if not (isinstance(error, ModbusExceptionResponse) and error.code == ILLEGAL_DATA_ADDRESS):
            return None
        if not isinstance(request, ReadRequest) or not state.planner.split(request):
            return None
        return state.planner.plan(p for p, _ in request.points)

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

    def plan_columns(self) -> tuple[str, ...]:
        return ("function", "table", "start", "count")

    def plan_cell(self, column: str, value: Any) -> str:
        return f"{value:02d}" if column == "function" else str(value)


__all__ = ["CodecError", "ModbusDriver"]

DRIVER = ModbusDriver()
register(DRIVER)
