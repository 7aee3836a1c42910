"""ASCII line protocols: how a sensor's text line is checked and taken apart, as its profile's `line` says.

    line:
      request: "SEND\\r"            # what the gateway sends to ask; none for a sensor that streams
      terminator: "\\r\\n"
      start: "$"                     # lines start here; anything before is noise
      pattern: '^RH= *(?P<humidity>[-0-9.]+) %RH T= *(?P<temperature>[-0-9.]+)'   # named groups ...
      delimiter: ","                 # ... or fields split by a delimiter, picked by index
      checksum: {kind: xor, separator: "*"}   # hex digits after the separator

Checksums cover the text after `start` (or from the beginning) up to the separator: `xor`
(NMEA 0183, Gill), `sum8` (the low byte of the sum), `crc16-modbus`, `crc16-ccitt`
(XMODEM). A line that fails any check is a `LineError` with a reason (checksum, format,
too_long): never a wrong value.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from gateway.common.types import Strict
from gateway.south.driver import CorruptAnswer

ChecksumKind = Literal["xor", "sum8", "crc16-modbus", "crc16-ccitt"]
DIGITS = {"xor": 2, "sum8": 2, "crc16-modbus": 4, "crc16-ccitt": 4}


class LineError(CorruptAnswer):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Checksum(Strict):
    kind: ChecksumKind
    separator: str = Field("*", min_length=1, max_length=4, description="what stands between the text and its digits")


class LineSpec(Strict):
    request: str | None = Field(None, max_length=200, description="what asks for a line ({address} is the device's)")
    terminator: str = Field("\r\n", min_length=1, max_length=4)
    start: str | None = Field(None, min_length=1, max_length=4, description="the characters a line starts with")
    pattern: str | None = Field(None, max_length=1000, description="a regular expression; named groups are fields")
    delimiter: str | None = Field(None, min_length=1, max_length=4, description="or: fields split by this")
    checksum: Checksum | None = None
    max_length: int = Field(256, ge=8, le=4096, description="longest line; longer is noise")
    format: str | None = Field(None, max_length=1000, description="how an emulator writes a line: R{range:04.0f}")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
            if nested_repeat(value):
                raise ValueError(
                    "a repeated group that itself repeats, like (a+)+ or (\\d+,)*, can take minutes on one bad "
                    "line: repeat the group or its inside, not both (for lists, use delimiter instead)"
                )
        return value

    @model_validator(mode="after")
    def _one_way(self) -> LineSpec:
        if (self.pattern is None) == (self.delimiter is None):
            raise ValueError("give either pattern (named groups) or delimiter (fields by index)")
        return self

    @property
    def groups(self) -> set[str]:
        return set(re.compile(self.pattern).groupindex) if self.pattern else set()


def nested_repeat(pattern: str) -> bool:
    """Does the pattern repeat something that itself repeats (catastrophic backtracking on a hostile line)?"""
    try:  # the parser `re` compiles with; its shape is the same from 3.11 to 3.13
        parser: Any = importlib.import_module("re._parser")
    except ImportError:  # pragma: no cover - a Python without it: the line length bound still holds
        return False

    def walk(items: Any, inside: bool) -> bool:
        for op, arg in items:
            name = str(op)
            if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                low, high, sub = arg
                repeats = high is parser.MAXREPEAT or high > 1
                if (inside and repeats and low != high) or walk(sub, inside or repeats):
                    return True  # a fixed count (\d{4}) inside a repeat cannot blow up; a variable one can
            elif name == "BRANCH":
                if any(walk(branch, inside) for branch in arg[1]):
                    return True
            elif name in ("SUBPATTERN", "ASSERT", "ASSERT_NOT") and walk(arg[-1], inside):
                return True
        return False

    return walk(parser.parse(pattern), False)


def checksum(kind: str, data: bytes) -> int:
    if kind == "xor":
        value = 0
        for byte in data:
            value ^= byte
        return value
    if kind == "sum8":
        return sum(data) & 0xFF
    if kind == "crc16-modbus":
        crc = 0xFFFF
        for byte in data:
            crc ^= byte
            for _ in range(8):
                crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        return crc
    crc = 0x0000  # CRC-16/XMODEM (CCITT polynomial 0x1021, initial 0)
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def parse_line(spec: LineSpec, raw: bytes) -> dict[str | int, str]:
    """The fields of one line (terminator included or not): by group name, or by index for a delimiter."""
    text = raw.decode("latin-1")
    if text.endswith(spec.terminator):
        text = text[: -len(spec.terminator)]
    if len(text) > spec.max_length:
        raise LineError("too_long", f"a line of {len(text)} characters (at most {spec.max_length})")
    if spec.start is not None:
        at = text.rfind(spec.start)
        if at < 0:
            raise LineError("format", f"no {spec.start!r} in {text[:60]!r}")
        text = text[at + len(spec.start) :]
    if spec.checksum is not None:
        sep = spec.checksum.separator
        at = text.rfind(sep)
        digits = DIGITS[spec.checksum.kind]
        if at < 0:
            raise LineError("checksum", f"no checksum after {sep!r} in {text[:60]!r}")
        given = text[at + len(sep) : at + len(sep) + digits]
        try:
            expected = int(given, 16) if len(given) == digits else -1
        except ValueError:
            expected = -1
        computed = checksum(spec.checksum.kind, text[:at].encode("latin-1"))
        if expected != computed:
            raise LineError("checksum", f"checksum {given!r}, computed {computed:0{digits}X} for {text[:60]!r}")
        text = text[:at]
    if any(not (c.isprintable() or c == "\t") for c in text):
        raise LineError("format", f"control characters in {text[:60]!r}")
    if spec.pattern is not None:
        match = re.search(spec.pattern, text)
        if match is None:
            raise LineError("format", f"{text[:60]!r} does not match the profile's pattern")
        return {k: v for k, v in match.groupdict().items() if v is not None}
    assert spec.delimiter is not None
    return dict(enumerate(text.split(spec.delimiter)))


def build_line(spec: LineSpec, values: dict[str, object]) -> bytes:
    """A line as the sensor writes it (emulators, tests): the `format` filled in, its checksum, its terminator."""
    if spec.format is None:
        raise ValueError("the profile's line has no format to write lines with")
    body = spec.format.format(**values)
    if spec.checksum is not None:
        digits = DIGITS[spec.checksum.kind]
        body += spec.checksum.separator + f"{checksum(spec.checksum.kind, body.encode('latin-1')):0{digits}X}"
    return ((spec.start or "") + body + spec.terminator).encode("latin-1")
