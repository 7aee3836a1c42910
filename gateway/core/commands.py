"""Commands to devices: validated against the profile before anything touches the bus.

Every refusal has a stable code, the same on MQTT `set/result`, in `cityedge write`
and in audit events: unknown_device, unknown_point, read_only, bad_type,
out_of_range, device_offline, timeout, modbus_exception, select_required,
select_expired.
"""

from __future__ import annotations

import math

from gateway.points.codec import CodecError, DataType, Value
from gateway.profiles.expand import PointSpec


class CommandError(Exception):
    def __init__(
        self,
        code: str,
        message: str,
        point: str | None = None,
        exception_code: int | None = None,
        details: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.point, self.exception_code = code, message, point, exception_code
        self.details = details

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"code": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        if self.point is not None:
            out["point"] = self.point
        if self.exception_code is not None:
            out["exception_code"] = self.exception_code
        return out


def check_value(point: PointSpec, value: object) -> Value:
    """The value to write, or CommandError(bad_type | out_of_range | read_only)."""
    name = point.name
    if not point.access.writable:
        raise CommandError("read_only", f"{name} is read-only", name)
    dtype = point.dtype
    if dtype in (DataType.BOOL, DataType.BIT):
        if isinstance(value, bool):
            return value
        raise CommandError("bad_type", f"{name} takes true or false, got {_shown(value)}", name)
    if dtype is DataType.ENUM:
        choices = dict(point.enum or {})
        if isinstance(value, str) and value in choices.values():
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value in choices:
            return choices[value]
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise CommandError(
                "bad_type", f"{name} takes one of {', '.join(choices.values())}, got {_shown(value)}", name
            )
        raise CommandError("out_of_range", f"{name} takes one of {', '.join(choices.values())}, got {value!r}", name)
    if dtype is DataType.STRING:
        if not isinstance(value, str):
            raise CommandError("bad_type", f"{name} takes text, got {_shown(value)}", name)
        _encode(point, value)
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CommandError("bad_type", f"{name} takes a number, got {_shown(value)}", name)
    if (point.min is not None and value < point.min) or (point.max is not None and value > point.max):
        low = "" if point.min is None else f"{point.min:g}"
        high = "" if point.max is None else f"{point.max:g}"
        raise CommandError("out_of_range", f"{name} must be within {low}..{high}, got {value}", name)
    _encode(point, value)
    return value


def _encode(point: PointSpec, value: Value) -> None:
    if point.codec is None:
        return
    try:
        point.codec.encode(value)
    except CodecError as exc:
        code = "bad_type" if "expected" in str(exc) else "out_of_range"
        raise CommandError(code, f"{point.name}: {exc}", point.name) from None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
