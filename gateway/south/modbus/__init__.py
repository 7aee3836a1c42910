"""Modbus master: PDUs, RTU and MBAP framing, and asyncio transports for TCP, RTU over TCP and serial lines."""
