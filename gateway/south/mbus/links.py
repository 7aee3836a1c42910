"""The link M-Bus meters are read over: a level converter (master) on a serial port."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.south.driver import AnswerTimeout, LinkSettings
from gateway.south.serialline import PortSettings

MbusBaud = Literal[300, 600, 1200, 2400, 4800, 9600, 19200, 38400]


class MbusLink(LinkSettings):
    type: Literal["mbus-serial"]
    device: str = Field(description="serial device of the M-Bus level converter, e.g. /dev/ttyUSB0")
    baudrate: MbusBaud = Field(2400, description="the segment's speed (most meters: 2400)")
    parity: Literal["N", "E", "O"] = "E"
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1
    timeout: AnswerTimeout = Field(
        0.5, description="wait for an answer (EN 13757-2 asks at least 330 bit times + 50 ms)"
    )
    retries: int = Field(1, ge=0, le=3, description="repeats of a request whose answer was damaged or collided")

    def port(self) -> PortSettings:
        return PortSettings(self.device, self.baudrate, self.bytesize, self.parity, self.stopbits)
