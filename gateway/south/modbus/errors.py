"""Why a Modbus transaction failed, classified so health counters and operators can tell causes apart."""

from __future__ import annotations

EXCEPTION_NAMES = {
    1: "illegal_function",
    2: "illegal_data_address",
    3: "illegal_data_value",
    4: "server_device_failure",
    5: "acknowledge",
    6: "server_device_busy",
    8: "memory_parity_error",
    10: "gateway_path_unavailable",
    11: "gateway_target_no_response",
}


class TransactionError(Exception):
    """Base of every classified failure. `kind` is the counter it lands in."""

    kind = "error"
    # Whether the device answered at all (exceptions) or not (timeouts, broken links).
    answered = False


class ModbusTimeout(TransactionError):
    kind = "timeout"


class CrcError(TransactionError):
    """A frame of the right shape whose CRC is wrong: noise, a bad cable or a bad termination."""

    kind = "crc"


class FrameError(TransactionError):
    """Bytes that are not the expected answer: garbage, a wrong length, another unit's answer."""

    kind = "framing"


class ConnectionFailed(TransactionError):
    """The link itself is down: refused, reset, unreachable, or a serial port that vanished."""

    kind = "connection"

    def __init__(self, message: str, reason: str = "connection_failed") -> None:
        super().__init__(message)
        self.reason = reason  # connection_refused, connection_reset, port_missing, ...

    @property
    def dropped(self) -> bool:
        """The connection was up and went during a transaction: the device in flight broke it, not the link."""
        return self.reason == "connection_reset"


class ModbusExceptionResponse(TransactionError):
    """The device answered with an exception code."""

    answered = True

    def __init__(self, function: int, code: int) -> None:
        self.function, self.code = function, code
        self.name = EXCEPTION_NAMES.get(code, f"exception_{code}")
        super().__init__(f"exception {code} ({self.name}) to function {function}")

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.name
