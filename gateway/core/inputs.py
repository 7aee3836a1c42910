"""Reading JSON that strangers send (operators' commands, nodes' telemetry), with bounds on everything.

`parse_json` refuses what cannot be read safely (too large, not UTF-8, nested too
deeply, numbers with absurdly many digits) with an `InputError` carrying a stable
code. Numbers that JSON cannot carry but Python's parser would accept (NaN,
Infinity, 1e999, integers too large for any register) become `BadNumber` markers
instead of floats, so one such value is refused where it is used, as an error of
that point, and never poisons anything published later.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 32  # objects and arrays inside each other; commands and telemetry need three or four
MAX_DIGITS = 40  # no register holds more than 20 decimal digits; beyond this nobody means a number
LARGEST = 2**64  # magnitudes from here on fit no register: refused per point like NaN


class InputError(ValueError):
    """Input refused as a whole. `code` is bad_json or payload_too_large."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class BadNumber:
    """A number that has no value here (NaN, an infinity, or beyond every register), as the sender wrote it."""

    __slots__ = ("reason", "text")

    def __init__(self, reason: str, text: str) -> None:
        self.reason = reason  # not_a_number | infinite | too_large
        self.text = text if len(text) <= 24 else f"{text[:12]}...({len(text)} digits)"

    def __repr__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BadNumber) and (other.reason, other.text) == (self.reason, self.text)

    def __hash__(self) -> int:
        return hash((self.reason, self.text))


def _constant(text: str) -> BadNumber:
    return BadNumber("not_a_number" if text == "NaN" else "infinite", text)


def _float(text: str) -> float | BadNumber:
    value = float(text)
    if math.isfinite(value):
        return value
    return BadNumber("infinite", "Infinity" if value > 0 else "-Infinity")


def _int(text: str) -> int | BadNumber:
    if len(text.lstrip("-")) > MAX_DIGITS:
        return BadNumber("too_large", text)
    value = int(text)
    return value if abs(value) < LARGEST else BadNumber("too_large", text)


def parse_json(raw: bytes | bytearray | str, *, max_bytes: int) -> Any:
    """The decoded document; InputError(bad_json | payload_too_large) when it cannot be read safely."""
    if len(raw) > max_bytes:
        raise InputError("payload_too_large", f"payload of {len(raw)} bytes is larger than {max_bytes}")
    try:
        text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError("bad_json", f"not UTF-8 text (byte {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except RecursionError:
        raise InputError("bad_json", f"nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:
        raise InputError("bad_json", f"not valid JSON: {exc}") from None
    if depth(data) > MAX_DEPTH:
        raise InputError("bad_json", f"nested more than {MAX_DEPTH} levels deep")
    return data


def depth(data: Any) -> int:
    """How deeply objects and arrays nest (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(data, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            return level
        stack.extend((child, level + 1) for child in children)
    return deepest


def without_bad_numbers(data: Any) -> tuple[Any, int]:
    """A copy of a free-form document without the entries that hold BadNumbers, and how many went."""
    if isinstance(data, BadNumber):
        return None, 1
    if isinstance(data, dict):
        out: dict[Any, Any] = {}
        removed = 0
        for key, value in data.items():
            if isinstance(value, BadNumber):
                removed += 1
                continue
            out[key], inner = without_bad_numbers(value)
            removed += inner
        return out, removed
    if isinstance(data, list):
        items: list[Any] = []
        removed = 0
        for value in data:
            if isinstance(value, BadNumber):
                removed += 1
                continue
            clean, inner = without_bad_numbers(value)
            items.append(clean)
            removed += inner
        return items, removed
    return data, 0
