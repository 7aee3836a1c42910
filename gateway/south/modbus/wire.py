"""Time on the wire of Modbus RTU: characters, the 3.5-character silence, a whole read.

One read of N registers is an 8-byte request and a (5 + 2N)-byte answer, each followed
by the silence that ends an RTU frame: (13 + 2N) characters and two t3.5. Coils and
discrete inputs pack eight to a byte.
"""

from __future__ import annotations

from gateway.south.serialline import char_time

REQUEST_BYTES = 8  # unit, function, start (2), count (2), CRC (2)
ANSWER_OVERHEAD = 5  # unit, function, byte count, CRC (2)

__all__ = ["char_time", "read_time", "t35"]


def t35(baudrate: int, parity: str = "N", stopbits: int = 1, bytesize: int = 8) -> float:
    """The inter-frame silence: 3.5 characters, fixed at 1.75 ms above 19200 baud (as the RTU spec says)."""
    return 0.00175 if baudrate > 19200 else 3.5 * char_time(baudrate, parity, stopbits, bytesize)


def read_time(count: int, bits: bool, baudrate: int, parity: str = "N", stopbits: int = 1, bytesize: int = 8) -> float:
    """Wire time of one read of `count` registers (or bits): request, answer and their two silences."""
    data = (count + 7) // 8 if bits else 2 * count
    chars = REQUEST_BYTES + ANSWER_OVERHEAD + data
    return chars * char_time(baudrate, parity, stopbits, bytesize) + 2 * t35(baudrate, parity, stopbits, bytesize)
