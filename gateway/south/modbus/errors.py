"""Why a Modbus transaction failed, as the common kinds every driver's failures have (see south/driver.py)."""

from __future__ import annotations

from gateway.south.driver import ConnectionFailed, CorruptAnswer, DeviceRefused, Timeout, TransactionError

__all__ = [
    "ConnectionFailed",
    "CrcError",
    "FrameError",
    "ModbusExceptionResponse",
    "ModbusTimeout",
    "TransactionError",
]

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


class ModbusTimeout(Timeout):
    pass


class CrcError(CorruptAnswer):
    """A frame of the right shape whose CRC is wrong: noise, a bad cable or a bad termination."""

    kind = "crc"


class FrameError(CorruptAnswer):
    """Bytes that are not the expected answer: garbage, a wrong length, another unit's answer."""

    kind = "framing"


class ModbusExceptionResponse(DeviceRefused):
    """The device answered with an exception code."""

    command_code = "modbus_exception"

    def __init__(self, function: int, code: int) -> None:
        name = EXCEPTION_NAMES.get(code, f"exception_{code}")
        super().__init__(name, f"exception {code} ({name}) to function {function}", code)
        self.function = function
