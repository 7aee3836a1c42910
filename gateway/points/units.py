"""Units a device states with its values (a meter's `kWh`, an M-Bus record's `Wh x 10^3`), and the unit a
profile wants: the same quantity in another prefix is converted, anything else is refused with the reason.

    >>> convert(1234.5, "Wh", "kWh")
    1.2345
    >>> convert(2.0, "m3", "l")
    2000.0
"""

from __future__ import annotations

PREFIXES = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "m": 1e-3}
# base units a device may prefix; litres are cubic decimetres
BASES = ("Wh", "W", "varh", "var", "VAh", "VA", "V", "A", "Hz", "m3", "g", "J", "bar", "Pa")
TIME = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}  # durations (on-time counters): in seconds
MASS = {"t": 1e6}  # a tonne is a megagram
ALIASES = {
    "m³": "m3",
    "m^3": "m3",
    "l": "dm3",
    "L": "dm3",
    "°C": "°C",
    "C": "°C",
    "degC": "°C",
    "K": "K",
    "m3/h": "m3/h",
    "m³/h": "m3/h",
    "l/h": "dm3/h",
    "KWH": "kWh",
    "KW": "kW",
    "KVARH": "kvarh",
    "KVAR": "kvar",
    "MWH": "MWh",
}
CUBIC = {"dm3": ("m3", 1e-3), "dm3/h": ("m3/h", 1e-3)}


class UnitMismatch(ValueError):
    """A value in a unit that is not the profile's, and not the same quantity with another prefix."""


def split(unit: str) -> tuple[str, float]:
    """(base unit, factor to it): `kWh` is ("Wh", 1000), `l` is ("m3", 0.001)."""
    unit = ALIASES.get(unit.strip(), unit.strip())
    if unit in TIME:
        return "s", TIME[unit]
    if unit in MASS:
        return "g", MASS[unit]
    if unit in CUBIC:
        return CUBIC[unit]
    for base in BASES:
        if unit == base:
            return base, 1.0
        if unit.endswith(base) and unit[: -len(base)] in PREFIXES:
            return base, PREFIXES[unit[: -len(base)]]
    if unit.endswith("/h") and unit != "/h":  # flows: m3/h, kg/h
        base, factor = split(unit[:-2])
        return base + "/h", factor
    return unit, 1.0


def convert(value: float, have: str, want: str) -> float:
    """`value` in unit `have`, expressed in unit `want`."""
    if have == want:
        return value
    base_have, f_have = split(have)
    base_want, f_want = split(want)
    if base_have != base_want:
        raise UnitMismatch(f"the device sends {have}, the profile expects {want}")
    result = value * f_have / f_want
    return float(f"{result:.12g}")  # 1234.5 Wh is 1.2345 kWh, not 1.2345000000000002
