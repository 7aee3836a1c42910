"""The links Modbus devices are reached over: Modbus TCP, RTU through a serial-to-Ethernet converter, RTU on a port."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from gateway.common.types import Duration, Seconds
from gateway.south.driver import AnswerTimeout, LinkSettings
from gateway.south.serialline import Rs485Settings

Port = Annotated[int, Field(ge=1, le=65535)]
ConnectTimeout = Annotated[Duration, Seconds(0.1, 60)]


class ModbusTcpLink(LinkSettings):
    type: Literal["modbus-tcp"]
    host: str
    port: Port = 502
    connect_timeout: ConnectTimeout = 3.0


class ModbusRtuTcpLink(LinkSettings):
    """Modbus RTU frames through a serial-to-Ethernet converter."""

    type: Literal["modbus-rtu-tcp"]
    host: str
    port: Port = 4001
    connect_timeout: ConnectTimeout = 3.0


class ModbusRtuLink(LinkSettings):
    type: Literal["modbus-rtu"]
    device: str = Field(description="serial device, e.g. /dev/ttyUSB0")
    baudrate: Literal[1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout: AnswerTimeout = 0.3
    rs485: Rs485Settings | None = Field(None, description="kernel RS-485 mode (RTS drives the transceiver)")


TcpLink = ModbusTcpLink | ModbusRtuTcpLink
