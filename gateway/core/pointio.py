"""Reading and writing single points over any transaction function: the engine's lane or a probe's link."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gateway.points.codec import DataType, Value
from gateway.profiles.expand import PointSpec
from gateway.profiles.model import Table
from gateway.south.modbus.pdu import read_request, write_coils_request, write_registers_request

Transact = Callable[[bytes], Awaitable[bytes]]  # request PDU -> checked answer data


async def write_point(transact: Transact, point: PointSpec, value: Value) -> None:
    assert point.table is not None and point.codec is not None
    if point.table is Table.COIL:
        await transact(write_coils_request(point.address, [bool(value)]))
    elif point.dtype is DataType.BIT:  # read-modify-write of the register holding the bit
        current = await transact(read_request(Table.HOLDING, point.address, 1))
        merged = point.codec.merge_bit(int.from_bytes(current[:2], "big"), value)
        await transact(write_registers_request(point.address, [merged]))
    else:
        await transact(write_registers_request(point.address, point.codec.encode(value)))


async def read_point(transact: Transact, point: PointSpec) -> Value:
    assert point.table is not None
    data = await transact(read_request(point.table, point.address, point.registers))
    if point.table.is_bits:
        return bool(data[0] & 1)
    assert point.codec is not None
    return point.codec.decode(data, 0)
