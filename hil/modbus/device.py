"""One emulated Modbus device: a profile's register map in memory, faults, and a behaviour model.

Registers are stored raw, exactly as the device would hold them, and written
through the project's codec, so a profile's byte order, scale and types are
honoured. Reads are validated like a real device: addresses outside the map or in
a forbidden range give exception 02, reads longer than the device's limit give
exception 03.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from gateway.points.types import DataType, PointValueError, Value
from gateway.profiles.expand import PointSpec, ResolvedProfile
from gateway.south.modbus.profile import ModbusPlace, Table, forbidden_hit, forbidden_ranges, place

# Modbus exception codes a fault may inject, by name and number.
EXCEPTION_CODES = {
    1: "illegal_function",
    2: "illegal_address",
    3: "illegal_value",
    4: "device_failure",
    5: "acknowledge",
    6: "device_busy",
    10: "gateway_path_unavailable",
    11: "gateway_no_response",
}
READ_FUNCTIONS = {1: Table.COIL, 2: Table.DISCRETE, 3: Table.HOLDING, 4: Table.INPUT, 23: Table.HOLDING}
WRITE_FUNCTIONS = {5: Table.COIL, 15: Table.COIL, 6: Table.HOLDING, 16: Table.HOLDING, 22: Table.HOLDING}


class Silent(Exception):
    """The device does not answer this request (a timeout for the master)."""


@dataclass
class DeviceFaults:
    """Faults of one device. All off by default; set any combination at start-up or at run time."""

    timeout: bool = False  # never answer
    exception: int | None = None  # answer every request with this exception code
    delay: float = 0.0  # extra seconds before every answer
    corrupt: bool = False  # RTU: wrong CRC; TCP: wrong MBAP length
    garbage: int = 0  # this many random bytes before each answer
    wrong_unit: bool = False  # answer as another unit id
    split_reads: int = 0  # reads longer than this many registers get exception 02 (0: off)
    refuse_long_reads: int = 0  # reads longer than this many registers get exception 03, as many meters do (0: off)
    ignore_long_reads: int = 0  # reads longer than this many registers get no answer at all (0: off)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply changes given as Python values or as strings from the command line; all or nothing."""
        kinds = {f.name: f.type for f in fields(self)}
        parsed: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in kinds:
                raise ValueError(f"unknown fault '{key}' (faults: {', '.join(sorted(kinds))})")
            parsed[key] = _parse_fault(key, str(kinds[key]), value)
        for key, value in parsed.items():
            setattr(self, key, value)

    def active(self) -> dict[str, Any]:
        default = DeviceFaults()
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)
        }


def _parse_fault(key: str, kind: str, value: Any) -> Any:
    text = str(value).strip().lower()
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if text in ("1", "true", "on", "yes"):
                return True
            if text in ("0", "false", "off", "no"):
                return False
            raise ValueError
        if key == "exception":
            if value is None or text in ("none", "off", "0", ""):
                return None
            code = int(text, 0)
            if code not in EXCEPTION_CODES:
                raise ValueError
            return code
        number = float(value) if kind == "float" else int(value)
        if number < 0:
            raise ValueError
        return number
    except (TypeError, ValueError):
        hint = f"one of {sorted(EXCEPTION_CODES)} or none" if key == "exception" else kind
        raise ValueError(f"fault {key}: expected {hint}, got {value!r}") from None


@dataclass
class DeviceStats:
    requests: int = 0
    reads: int = 0
    writes: int = 0
    exceptions: int = 0
    silenced: int = 0
    reboots: int = 0


class _Table:
    """Raw storage of one Modbus table over the span the profile maps."""

    __slots__ = ("data", "mapped", "size")

    def __init__(self, size: int, bits: bool) -> None:
        self.size = size
        self.data: array[int] = array("B" if bits else "H", bytes((1 if bits else 2) * size))
        self.mapped = bytearray(size)  # 1 where some point lives


@dataclass
class WriteEvent:
    point: str
    value: Value


class EmulatedDevice:
    """Registers, faults and behaviour of one emulated device on one unit id."""

    def __init__(self, device_id: str, resolved: ResolvedProfile, unit: int, *, strict: bool = False) -> None:
        self.id = device_id
        self.resolved = resolved
        self.unit = unit
        self.strict = strict  # exception 02 for registers no point uses, instead of reading zeros
        self.faults = DeviceFaults()
        self.stats = DeviceStats()
        self.silent_until = 0.0  # after a reboot
        self.points = {p.name: p for p in resolved.points}
        self.places: dict[str, ModbusPlace] = {p.name: place(p) for p in resolved.points}
        self.forbidden = forbidden_ranges(resolved.limits)
        self.on_write: list[Callable[[WriteEvent], None]] = []
        self.tables: dict[Table, _Table] = {}
        for table in Table:
            members = [w for w in self.places.values() if w.table is table]
            size = max((w.end + 1 for w in members), default=0)
            t = _Table(size, table.is_bits)
            for w in members:
                for a in range(w.address, w.end + 1):
                    t.mapped[a] = 1
            self.tables[table] = t
        self.reset()

    # -- values through the codec ---------------------------------------------------------

    def reset(self) -> None:
        """Power-on state: zeros, then every point's initial value."""
        for t in self.tables.values():
            for i in range(t.size):
                t.data[i] = 0
        for p in self.points.values():
            if p.initial is not None:
                self.set(p.name, p.initial)

    def set(self, name: str, value: Value) -> None:
        """Set a point's engineering value as the device itself would (no access checks)."""
        p, w = self.points[name], self.places[name]
        t = self.tables[w.table]
        if w.table.is_bits:
            t.data[w.address] = 1 if value else 0
            return
        if w.codec is None:
            raise KeyError(name)
        if p.dtype is DataType.BIT:
            t.data[w.address] = w.codec.merge_bit(t.data[w.address], value)
            return
        for i, word in enumerate(w.codec.encode(value)):
            t.data[w.address + i] = word

    def get(self, name: str) -> Value:
        w = self.places[name]
        t = self.tables[w.table]
        if w.table.is_bits:
            return bool(t.data[w.address])
        if w.codec is None:
            raise KeyError(name)
        return w.codec.decode_registers(t.data[w.address : w.end + 1])

    def has(self, name: str) -> bool:
        return name in self.points

    # -- Modbus requests --------------------------------------------------------------------

    def check_answerable(self) -> None:
        """Raise Silent when the device must not answer at all right now."""
        if self.faults.timeout or time.monotonic() < self.silent_until:
            self.stats.silenced += 1
            raise Silent

    def read(self, table: Table, address: int, count: int) -> list[int] | int:
        """Values for a read request, or an exception code."""
        self.stats.reads += 1
        limits = self.resolved.limits
        top = limits.max_bits if table.is_bits else limits.max_registers
        if count < 1 or count > top:
            return 3
        if self.faults.split_reads and count > self.faults.split_reads:
            return 2
        if self.faults.refuse_long_reads and count > self.faults.refuse_long_reads:
            return 3
        t = self.tables[table]
        if address + count > t.size or self._forbidden(table, address, address + count - 1):
            return 2
        if self.strict and not all(t.mapped[address : address + count]):
            return 2
        return t.data[address : address + count].tolist()

    def peek(self, table: Table, address: int, count: int) -> list[int]:
        """Echo of a write (no checks, no faults)."""
        return self.tables[table].data[address : address + count].tolist()

    def write(self, table: Table, address: int, values: Sequence[int]) -> int | None:
        """Apply a write request; None on success or an exception code."""
        self.stats.writes += 1
        t = self.tables[table]
        end = address + len(values) - 1
        touched = [
            p
            for p in self.points.values()
            if (w := self.places[p.name]).table is table and w.address <= end and w.end >= address
        ]
        if end >= t.size or not touched or any(not p.access.writable for p in touched):
            return 2
        old = t.data[address : end + 1]
        for i, v in enumerate(values):
            t.data[address + i] = int(v)
        events: list[WriteEvent] = []
        for p in touched:
            w = self.places[p.name]
            if w.address < address or w.end > end:
                continue  # a partial write of a wider point: stored, but not a command
            try:
                value = self.get(p.name)
            except PointValueError:
                value = None
            if value is None or not _within(p, value):
                t.data[address : end + 1] = old
                return 3
            events.append(WriteEvent(p.name, value))
        for event in events:
            for listener in self.on_write:
                listener(event)
        return None

    def _forbidden(self, table: Table, start: int, end: int) -> bool:
        return forbidden_hit(self.forbidden, table, start, end) is not None


def _within(p: PointSpec, value: Value) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return True
    return not ((p.min is not None and value < p.min) or (p.max is not None and value > p.max))
