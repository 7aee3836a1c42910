"""The link an ASCII sensor is read over: its serial port (RS-232, RS-485 for polled sensors sharing a pair)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.south.driver import AnswerTimeout, LinkSettings
from gateway.south.serialline import PortSettings, Rs485Settings


class AsciiLink(LinkSettings):
    type: Literal["ascii-serial"]
    device: str = Field(description="serial device, e.g. /dev/ttyUSB2")
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] = "N"
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1
    timeout: AnswerTimeout = Field(2.0, description="wait for a line (streaming sensors: longer than their period)")
    rs485: Rs485Settings | None = Field(None, description="kernel RS-485 mode (RTS drives the transceiver)")

    def port(self) -> PortSettings:
        return PortSettings(self.device, self.baudrate, self.bytesize, self.parity, self.stopbits, self.rs485)
