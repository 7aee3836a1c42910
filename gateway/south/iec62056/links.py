"""The link an IEC 62056-21 meter is read over: an optical head or an RS-485 line on a serial port."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from gateway.common.types import Duration, Seconds
from gateway.south.driver import AnswerTimeout, LinkSettings
from gateway.south.serialline import PortSettings, Rs485Settings

ModeCBaud = Literal[300, 600, 1200, 2400, 4800, 9600, 19200]


class Iec62056Link(LinkSettings):
    type: Literal["iec62056-serial"]
    device: str = Field(description="serial device of the optical head or RS-485 adapter, e.g. /dev/ttyUSB0")
    baudrate: ModeCBaud = Field(300, description="speed of the sign-on (mode C: 300)")
    max_baudrate: ModeCBaud = Field(
        19200, description="highest speed the gateway proposes (some optical heads top out at 9600)"
    )
    parity: Literal["N", "E", "O"] = "E"
    bytesize: Literal[7, 8] = 7
    stopbits: Literal[1, 2] = 1
    timeout: AnswerTimeout = Field(
        2.0, description="silence that ends waiting for an answer (meters may take 1.5 s to react)"
    )
    retries: int = Field(1, ge=0, le=3, description="new sessions after a damaged readout, within one poll")
    recovery: Annotated[Duration, Seconds(0, 10)] = Field(
        1.5, description="silence after a failed session, so the meter is back in its initial state"
    )
    rs485: Rs485Settings | None = Field(None, description="kernel RS-485 mode (RTS drives the transceiver)")

    def port(self) -> PortSettings:
        return PortSettings(self.device, self.baudrate, self.bytesize, self.parity, self.stopbits, self.rs485)
