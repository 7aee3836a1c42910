"""The USB serial port: does it exist, may we open it, is it free. Checked before anything talks to the board."""

from __future__ import annotations

import errno
import os

from gateway.technician import NodeToolError

DIALOUT_HINT = (
    "Add your user to the dialout group once: sudo usermod -aG dialout $USER\n"
    "then log out and back in (or reboot) and run this again."
)


def host_port(address: str, default_port: int | None = None) -> tuple[str, int | None]:
    """("host", port) from HOST or HOST:PORT ([v6] brackets dropped); ValueError when the port is not a number.
    Without a port the default is used (None: the caller decides)."""
    host, sep, port = address.rpartition(":")
    if not sep:
        return address.strip("[]"), default_port
    if not port.isdigit():
        raise ValueError(address)
    return host.strip("[]"), int(port)


def ports_seen() -> list[str]:
    """The serial ports the machine has now, e.g. ['/dev/ttyUSB0 (CP2102 USB to UART Bridge Controller)']."""
    from serial.tools import list_ports

    seen = []
    for port in sorted(list_ports.comports(), key=lambda p: p.device):
        detail = port.description if port.description and port.description != "n/a" else ""
        seen.append(f"{port.device} ({detail})" if detail else port.device)
    return seen


def no_port_message(port: str) -> str:
    seen = ports_seen()
    listing = ", ".join(seen) if seen else "none"
    return (
        f"There is no serial port {port}.\n"
        "Is the node plugged in, with a USB cable that carries data (not a charge-only cable)?\n"
        f"Serial ports on this machine now: {listing}"
    )


def check_port(port: str) -> None:
    """Raise NodeToolError when the port is missing, not ours to open, or in use."""
    if not os.path.exists(port):
        raise NodeToolError(no_port_message(port))
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except PermissionError:
        raise NodeToolError(f"Permission denied on {port}.\n{DIALOUT_HINT}") from None
    except OSError as exc:
        raise NodeToolError(port_error_message(port, exc)) from None
    os.close(fd)


def port_error_message(port: str, exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"Permission denied on {port}.\n{DIALOUT_HINT}"
    if exc.errno == errno.ENOENT:
        return no_port_message(port)
    if exc.errno == errno.EBUSY:
        return (
            f"{port} is in use by another program.\n"
            "Close other serial consoles (screen, minicom, Thonny, Arduino IDE, another cityedge) and try again."
        )
    return f"Cannot open {port}: {exc.strerror or exc}."
