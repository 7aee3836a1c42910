"""M-Bus application layer (EN 13757-3): the RSP_UD header and its variable data records, decoded.

A record is DIF [DIFE...] VIF [VIFE...] data:

- DIF: the data field (bits 0-3: none, 8/16/24/32/48/64-bit integer, 32-bit real, 2/4/6/8/12-digit
  BCD, variable length), the function (bits 4-5: instantaneous, maximum, minimum, during error),
  the storage number's lowest bit (bit 6), and an extension bit (7). 0x0F and 0x1F start
  manufacturer data; 0x1F also says more records follow in the next telegram; 0x2F is a filler.
- DIFE: four more storage bits, two tariff bits, one subunit bit each.
- VIF: quantity, unit and decimal exponent from the primary table, or the 0xFD / 0xFB tables,
  or a plain-text unit (0x7C); VIFEs refine it (0x70-0x77 multiply by 10^(n-6)).

Values come out as integers or floats in the unit and exponent the meter chose (`Record.unit`,
`Record.value` already scaled), dates as ISO text, text as text. Every way a telegram can be
wrong is a `RecordError` (a `CorruptAnswer`) with a reason: no exception of another kind, no
wrong value. A record this decoder does not know is kept with quantity `unknown` rather than
failing the telegram.

Why our own decoder: pyMeterBus decodes the same records (the tests cross-check it), but it
is synchronous, pulls in pyaml, simplejson and pycryptodome, returns floats through
`Decimal` strings, and raises assorted exceptions on bad input; the gateway needs a small,
total function on a Raspberry Pi.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from gateway.south.driver import CorruptAnswer

FUNCTIONS = ("instantaneous", "maximum", "minimum", "error")
MEDIA = {
    0x00: "other", 0x01: "oil", 0x02: "electricity", 0x03: "gas", 0x04: "heat (outlet)", 0x05: "steam",
    0x06: "warm water", 0x07: "water", 0x08: "heat cost allocator", 0x09: "compressed air",
    0x0A: "cooling (outlet)", 0x0B: "cooling (inlet)", 0x0C: "heat (inlet)", 0x0D: "heat / cooling",
    0x0E: "bus / system", 0x0F: "unknown", 0x15: "hot water", 0x16: "cold water", 0x17: "dual water",
    0x18: "pressure", 0x19: "A/D converter",
}  # fmt: skip


class RecordError(CorruptAnswer):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Header:
    ident: str  # 8 digits
    manufacturer: str  # three letters
    version: int
    medium: int
    access: int
    status: int

    @property
    def secondary(self) -> str:
        """ID.MAN.VV.MM, the form `cityedge mbus scan` lists and device addresses take."""
        return f"{self.ident}.{self.manufacturer}.{self.version:02X}.{self.medium:02X}"

    @property
    def medium_name(self) -> str:
        return MEDIA.get(self.medium, f"medium {self.medium:#04x}")


@dataclass(slots=True)
class Record:
    quantity: str  # energy, volume, flow_temperature, ... (see VIF tables), or unknown
    unit: str  # the unit of `value`: Wh, m3, °C, s, ... ("" for none)
    value: int | float | str | None
    function: str = "instantaneous"
    storage: int = 0
    tariff: int = 0
    subunit: int = 0
    dif: int = 0
    vif: int = 0
    vifes: tuple[int, ...] = ()
    raw: bytes = b""  # the data field
    modifier: str = ""  # what a VIFE makes of the quantity: a limit, a date of, manufacturer, ... ("" for none)


@dataclass(slots=True)
class Telegram:
    header: Header | None
    records: list[Record] = field(default_factory=list)
    more: bool = False  # DIF 0x1F: the meter has another telegram
    manufacturer_data: bytes = b""


def manufacturer_code(value: int) -> str:
    """Two bytes to the three letters of EN 13757-3 (each letter A=1 in 5 bits)."""
    letters = [((value >> shift) & 0x1F) + 64 for shift in (10, 5, 0)]
    return "".join(chr(c) if 65 <= c <= 90 else "?" for c in letters)


def manufacturer_value(code: str) -> int:
    if len(code) != 3 or not code.isalpha() or not code.isascii():
        raise ValueError(f"a manufacturer is three letters, not {code!r}")
    a, b, c = (ord(x) - 64 for x in code.upper())
    return (a << 10) | (b << 5) | c


def bcd(data: bytes) -> int:
    """Packed BCD, least significant byte first; an F in the top digit makes it negative."""
    digits = data[::-1].hex().upper()
    negative = digits.startswith("F")
    if negative:
        digits = digits[1:]
    if not digits.isdigit():
        raise RecordError("bcd", f"{data.hex(' ')} is not BCD")
    return -int(digits) if negative else int(digits)


def parse_header(ci: int, data: bytes) -> tuple[Header | None, int]:
    if ci in (0x72, 0x76):
        if len(data) < 12:
            raise RecordError("truncated", f"long header of {len(data)} bytes, not 12")
        if ci == 0x76:
            raise RecordError("unsupported", "CI 0x76 (data most significant byte first) is not supported")
        ident = data[3::-1].hex().upper()
        if not ident.isdigit():
            raise RecordError("bcd", f"identification {ident} is not BCD")
        man = manufacturer_code(int.from_bytes(data[4:6], "little"))
        return Header(ident, man, data[6], data[7], data[8], data[9]), 12
    if ci == 0x7A:
        if len(data) < 4:
            raise RecordError("truncated", "short header cut off")
        return None, 4
    if ci == 0x78:
        return None, 0
    raise RecordError("ci", f"CI {ci:#04x} is not a variable data response (0x72, 0x78, 0x7A)")


def parse_rsp_ud(ci: int, data: bytes) -> Telegram:
    header, at = parse_header(ci, data)
    telegram = Telegram(header)
    while at < len(data):
        dif = data[at]
        if dif == 0x2F:  # filler
            at += 1
            continue
        if dif in (0x0F, 0x1F):
            telegram.more = dif == 0x1F
            telegram.manufacturer_data = bytes(data[at + 1 :])
            break
        record, at = _record(data, at)
        telegram.records.append(record)
    return telegram


_LENGTHS = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 4, 6: 6, 7: 8, 8: 0, 9: 1, 10: 2, 11: 3, 12: 4, 14: 6}


def _record(data: bytes, at: int) -> tuple[Record, int]:
    start = at
    dif = data[at]
    at += 1
    storage, tariff, subunit = (dif >> 6) & 1, 0, 0
    function = FUNCTIONS[(dif >> 4) & 3]
    ext, n = dif & 0x80, 0
    while ext:
        if at >= len(data):
            raise RecordError("truncated", f"record at byte {start}: DIFE cut off")
        if n >= 10:
            raise RecordError("dif", f"record at byte {start}: more than 10 DIFEs")
        dife = data[at]
        at += 1
        storage |= (dife & 0x0F) << (1 + 4 * n)
        tariff |= ((dife >> 4) & 3) << (2 * n)
        subunit |= ((dife >> 6) & 1) << n
        ext, n = dife & 0x80, n + 1
    if at >= len(data):
        raise RecordError("truncated", f"record at byte {start}: VIF missing")
    vif = data[at]
    at += 1
    plain = ""
    if vif & 0x7F == 0x7C:  # plain-text unit: length, then ASCII last character first
        if at >= len(data) or at + 1 + data[at] > len(data):
            raise RecordError("truncated", f"record at byte {start}: plain-text VIF cut off")
        size = data[at]
        plain = bytes(data[at + 1 : at + 1 + size][::-1]).decode("latin-1")
        at += 1 + size
    vifes: list[int] = []
    if vif in (0xFD, 0xFB):
        if at >= len(data):
            raise RecordError("truncated", f"record at byte {start}: extension VIF cut off")
        vifes.append(data[at])
        at += 1
    more = (vifes[-1] if vifes else vif) & 0x80
    while more:
        if at >= len(data):
            raise RecordError("truncated", f"record at byte {start}: VIFE cut off")
        if len(vifes) >= 10:
            raise RecordError("vif", f"record at byte {start}: more than 10 VIFEs")
        vifes.append(data[at])
        more = data[at] & 0x80
        at += 1
    coding = dif & 0x0F
    if coding == 0x0D:  # variable length: LVAR says how and how long
        if at >= len(data):
            raise RecordError("truncated", f"record at byte {start}: LVAR cut off")
        lvar = data[at]
        at += 1
        size = lvar if lvar < 0xC0 else (lvar - 0xC0) & 0x0F if lvar < 0xF0 else 0
        if lvar >= 0xF0:
            raise RecordError("lvar", f"record at byte {start}: LVAR {lvar:#04x} is reserved")
        raw = bytes(data[at : at + size])
        at += size
        if len(raw) < size:
            raise RecordError("truncated", f"record at byte {start}: {size} bytes of data cut off")
        value: int | float | str | None
        if lvar < 0xC0:
            value = raw[::-1].decode("latin-1")
        elif lvar < 0xE0:
            value = bcd(raw) * (-1 if lvar >= 0xD0 else 1)
        else:
            value = int.from_bytes(raw, "little")
    else:
        if coding not in _LENGTHS:
            raise RecordError("dif", f"record at byte {start}: data field {coding:#x} is reserved")
        size = _LENGTHS[coding]
        raw = bytes(data[at : at + size])
        if len(raw) < size:
            raise RecordError("truncated", f"record at byte {start}: {size} bytes of data cut off")
        at += size
        value = _value(coding, raw)
    quantity, unit, exponent, kind, modifier = describe(vif, vifes, plain)
    if modifier.startswith("error"):
        value = None
    if kind == "date" and isinstance(value, int):
        value = _date(raw) if len(raw) == 2 else _datetime(raw)
    elif kind == "datetime" and isinstance(value, int):
        value = _datetime(raw) if len(raw) == 4 else _date(raw)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and exponent:
        value = _scaled(value, exponent)
    record = Record(quantity, unit, value, function, storage, tariff, subunit, dif, vif, tuple(vifes), raw, modifier)
    return record, at


def _value(coding: int, raw: bytes) -> int | float | None:
    if coding in (0, 8):
        return None
    if coding == 5:
        (real,) = struct.unpack("<f", raw)
        return float(real)
    if coding >= 9:
        return bcd(raw)
    return int.from_bytes(raw, "little", signed=True)


def _scaled(value: int | float, exponent: int) -> int | float:
    if exponent >= 0 and isinstance(value, int):
        return int(value * 10**exponent)
    return float(f"{value * 10.0**exponent:.12g}")


def _date(raw: bytes) -> str | None:
    """Type G: day, month, year in two bytes."""
    if len(raw) < 2:
        return None
    day, month = raw[0] & 0x1F, raw[1] & 0x0F
    year = ((raw[0] & 0xE0) >> 5) | ((raw[1] & 0xF0) >> 1)
    if not (1 <= day <= 31 and 1 <= month <= 12):
        return None
    return f"{2000 + year:04d}-{month:02d}-{day:02d}"


def _datetime(raw: bytes) -> str | None:
    """Type F: minute, hour, then a type G date, in four bytes (bit 7 of the minute: invalid)."""
    if len(raw) < 4 or raw[0] & 0x80:
        return None
    minute, hour = raw[0] & 0x3F, raw[1] & 0x1F
    date = _date(raw[2:4])
    if date is None or minute > 59 or hour > 23:
        return None
    return f"{date}T{hour:02d}:{minute:02d}"


# -- VIF tables ------------------------------------------------------------------------------------------


def describe(vif: int, vifes: list[int], plain: str = "") -> tuple[str, str, int, str, str]:
    """(quantity, unit, decimal exponent, kind, modifier) of a VIF and its VIFEs; kind is number, date or
    datetime. The multiplicative VIFEs only scale; any other makes a `modifier`, so a record that is not the
    quantity itself (its limit, the date of its maximum, a manufacturer's variant) is never read as it."""
    code = vif & 0x7F
    if vif in (0xFD, 0xFB) and vifes:
        quantity, unit, exponent, kind = (_fd if vif == 0xFD else _fb)(vifes[0] & 0x7F)
        rest = vifes[1:]
    elif code == 0x7C:
        quantity, unit, exponent, kind, rest = "plain", plain, 0, "number", vifes
    else:
        quantity, unit, exponent, kind = _primary(code)
        rest = vifes
    modifiers: list[str] = []
    for vife in rest:  # combinable extensions
        e = vife & 0x7F
        if 0x70 <= e <= 0x77:
            exponent += (e & 7) - 6
        elif e == 0x7D:
            exponent += 3
        elif e <= 0x1F:
            modifiers.append(f"error {e:#04x}")
        elif 0x68 <= e <= 0x6F:
            modifiers.append("date_of_limit_exceed")
            kind, unit, exponent = "datetime", "", 0
        elif e == 0x7F:
            modifiers.append("manufacturer")
        else:
            modifiers.append(f"vife {e:#04x}")
    return quantity, unit, exponent, kind, " ".join(modifiers)


def _primary(code: int) -> tuple[str, str, int, str]:
    n = code & 7
    if code <= 0x07:
        return "energy", "Wh", n - 3, "number"
    if code <= 0x0F:
        return "energy", "J", n, "number"
    if code <= 0x17:
        return "volume", "m3", n - 6, "number"
    if code <= 0x1F:
        return "mass", "kg", n - 3, "number"
    if code <= 0x27:
        name = "on_time" if code <= 0x23 else "operating_time"
        return name, ("s", "min", "h", "d")[code & 3], 0, "number"
    if code <= 0x2F:
        return "power", "W", n - 3, "number"
    if code <= 0x37:
        return "power", "J/h", n, "number"
    if code <= 0x3F:
        return "volume_flow", "m3/h", n - 6, "number"
    if code <= 0x47:
        return "volume_flow", "m3/min", n - 7, "number"
    if code <= 0x4F:
        return "volume_flow", "m3/s", n - 9, "number"
    if code <= 0x57:
        return "mass_flow", "kg/h", n - 3, "number"
    m = code & 3
    if code <= 0x5B:
        return "flow_temperature", "°C", m - 3, "number"
    if code <= 0x5F:
        return "return_temperature", "°C", m - 3, "number"
    if code <= 0x63:
        return "temperature_difference", "K", m - 3, "number"
    if code <= 0x67:
        return "external_temperature", "°C", m - 3, "number"
    if code <= 0x6B:
        return "pressure", "bar", m - 3, "number"
    if code == 0x6C:
        return "date", "", 0, "date"
    if code == 0x6D:
        return "date_time", "", 0, "datetime"
    if code == 0x6E:
        return "hca_units", "", 0, "number"
    if code <= 0x73:
        return "averaging_duration", ("s", "min", "h", "d")[code & 3], 0, "number"
    if code <= 0x77:
        return "actuality_duration", ("s", "min", "h", "d")[code & 3], 0, "number"
    if code == 0x78:
        return "fabrication_number", "", 0, "number"
    if code == 0x79:
        return "enhanced_identification", "", 0, "number"
    if code == 0x7A:
        return "bus_address", "", 0, "number"
    if code == 0x7E:
        return "any", "", 0, "number"
    if code == 0x7F:
        return "manufacturer_specific", "", 0, "number"
    return "unknown", "", 0, "number"


_FD_NAMED = {
    0x08: "access_number", 0x09: "medium", 0x0A: "manufacturer", 0x0B: "parameter_set", 0x0C: "model_version",
    0x0D: "hardware_version", 0x0E: "firmware_version", 0x0F: "software_version", 0x10: "customer_location",
    0x11: "customer", 0x16: "password", 0x17: "error_flags", 0x18: "error_mask", 0x1A: "digital_output",
    0x1B: "digital_input", 0x1C: "baudrate", 0x1D: "response_delay", 0x1E: "retry", 0x60: "reset_counter",
    0x61: "cumulation_counter", 0x62: "control_signal", 0x63: "day_of_week", 0x64: "week_number",
    0x65: "time_point_of_day_change", 0x66: "state_of_parameter_activation", 0x74: "battery_days",
}  # fmt: skip


def _fd(code: int) -> tuple[str, str, int, str]:
    if 0x40 <= code <= 0x4F:
        return "voltage", "V", (code & 0x0F) - 9, "number"
    if 0x50 <= code <= 0x5F:
        return "current", "A", (code & 0x0F) - 12, "number"
    return _FD_NAMED.get(code, "unknown"), "", 0, "number"


def _fb(code: int) -> tuple[str, str, int, str]:
    n = code & 1
    table = {
        0x00: ("energy", "MWh", n - 1),
        0x08: ("energy", "GJ", n - 1),
        0x10: ("volume", "m3", n + 2),
        0x18: ("mass", "t", n + 2),
        0x28: ("power", "MW", n - 1),
        0x30: ("power", "GJ/h", n - 1),
    }
    found = table.get(code & 0x7E)
    if found is None:
        return "unknown", "", 0, "number"
    return found[0], found[1], found[2], "number"


# -- encoding, for emulators and tests ---------------------------------------------------------------------

VIF_OF = {  # quantity -> (VIF base, exponent offset, exponent range): VIF = base + (exponent - offset)
    "energy": (0x00, -3, range(-3, 5)),
    "volume": (0x10, -6, range(-6, 2)),
    "mass": (0x18, -3, range(-3, 5)),
    "power": (0x28, -3, range(-3, 5)),
    "volume_flow": (0x38, -6, range(-6, 2)),
    "mass_flow": (0x50, -3, range(-3, 5)),
    "flow_temperature": (0x58, -3, range(-3, 1)),
    "return_temperature": (0x5C, -3, range(-3, 1)),
    "temperature_difference": (0x60, -3, range(-3, 1)),
    "external_temperature": (0x64, -3, range(-3, 1)),
    "pressure": (0x68, -3, range(-3, 1)),
}
UNIT_OF = {"energy": "Wh", "volume": "m3", "mass": "kg", "power": "W", "volume_flow": "m3/h", "mass_flow": "kg/h"}
UNIT_OF.update(dict.fromkeys(("flow_temperature", "return_temperature", "external_temperature"), "°C"))
UNIT_OF.update(temperature_difference="K", pressure="bar", on_time="h", operating_time="h")


def encode_record(
    quantity: str,
    value: int | float | str,
    *,
    exponent: int = 0,
    function: str = "instantaneous",
    storage: int = 0,
    tariff: int = 0,
    subunit: int = 0,
    coding: int = 0x04,
) -> bytes:
    """One record: `value` in the quantity's base unit (Wh, m3, °C, ...) stored as value / 10^exponent."""
    difes: list[int] = []
    rest_storage, rest_tariff, rest_subunit = storage >> 1, tariff, subunit
    while rest_storage or rest_tariff or rest_subunit:
        difes.append((rest_storage & 0x0F) | ((rest_tariff & 3) << 4) | ((rest_subunit & 1) << 6))
        rest_storage, rest_tariff, rest_subunit = rest_storage >> 4, rest_tariff >> 2, rest_subunit >> 1
    for i in range(len(difes) - 1):
        difes[i] |= 0x80
    dif = coding | (FUNCTIONS.index(function) << 4) | ((storage & 1) << 6) | (0x80 if difes else 0)
    if quantity == "fabrication_number":
        vif, exponent = 0x78, 0
    elif quantity == "date_time":
        vif = 0x6D
    elif quantity in ("on_time", "operating_time"):
        vif = (0x20 if quantity == "on_time" else 0x24) + 2  # hours
    else:
        base, offset, allowed = VIF_OF[quantity]
        if exponent not in allowed:
            raise ValueError(f"{quantity} takes exponents {allowed.start}..{allowed.stop - 1}, not {exponent}")
        vif = base + exponent - offset
    if quantity == "date_time":
        return bytes([0x04 | (dif & 0xF0), *difes, vif]) + _encode_datetime(str(value))
    if isinstance(value, str):
        raise ValueError(f"{quantity} needs a number, not {value!r}")
    stored = round(value / 10.0**exponent)
    if coding in (0x09, 0x0A, 0x0B, 0x0C, 0x0E):
        digits = {0x09: 2, 0x0A: 4, 0x0B: 6, 0x0C: 8, 0x0E: 12}[coding]
        text = f"{abs(stored):0{digits}d}"
        if stored < 0:
            text = "F" + text[1:]
        data = bytes.fromhex(text)[::-1]
    elif coding == 0x05:
        data = struct.pack("<f", value / 10.0**exponent)
    else:
        data = stored.to_bytes(_LENGTHS[coding], "little", signed=True)
    return bytes([dif, *difes, vif]) + data


def _encode_datetime(text: str) -> bytes:
    date, _, time = text.partition("T")
    year, month, day = (int(x) for x in date.split("-"))
    hour, minute = (int(x) for x in (time or "00:00").split(":")[:2])
    y = year - 2000
    return bytes([minute, hour, day | ((y & 7) << 5), month | ((y & 0x78) << 1)])


def header_bytes(ident: str, manufacturer: str, version: int, medium: int, access: int, status: int = 0) -> bytes:
    return (
        bytes.fromhex(ident)[::-1]
        + manufacturer_value(manufacturer).to_bytes(2, "little")
        + bytes([version, medium, access & 0xFF, status, 0, 0])
    )
