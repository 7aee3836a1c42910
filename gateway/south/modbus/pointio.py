"""Reading and writing single points over any transaction function: the engine's lane or a probe's link."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gateway.points.types import DataType, Value
from gateway.profiles.expand import PointSpec
from gateway.south.modbus.pdu import read_request, write_coils_request, write_registers_request
from gateway.south.modbus.profile import Table, place

Transact = Callable[[bytes], Awaitable[bytes]]  # request PDU -> checked answer data


async def write_point(transact: Transact, point: PointSpec, value: Value) -> None:
    where = place(point)
    if where.table is Table.COIL:
        await transact(write_coils_request(where.address, [bool(value)]))
        return
    assert where.codec is not None
    if point.dtype is DataType.BIT:  # read-modify-write of the register holding the bit
        current = await transact(read_request(Table.HOLDING, where.address, 1))
        merged = where.codec.merge_bit(int.from_bytes(current[:2], "big"), value)
        await transact(write_registers_request(where.address, [merged]))
    else:
        await transact(write_registers_request(where.address, where.codec.encode(value)))


async def read_point(transact: Transact, point: PointSpec) -> Value:
    where = place(point)
    data = await transact(read_request(where.table, where.address, where.registers))
    if where.table.is_bits:
        return bool(data[0] & 1)
    assert where.codec is not None
    return where.codec.decode(data, 0)
