"""The node's USB console, read while the tools wait for it: what it says of its WiFi and broker link.

The firmware prints one `LINK <state>: <words>` line each time its link changes (firmware/app.py):
wrong_password, no_ap_found, connect_failed, connecting, got_ip, broker_refused,
broker_unreachable, connected. Reading them, `node setup` can say within seconds why a node
does not report, instead of waiting out its whole check; `node monitor --port` explains them.
A board unplugged meanwhile is told apart from a WiFi problem.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections import deque

LINE = re.compile(r"LINK (\w+): (.*)")
KEEP = 200  # console lines (and link states) kept
MAX_LINE = 512  # bytes of one console line looked at
# What each state means for the technician, and what to do; None: not a failure.
ADVICE = {
    "wrong_password": "the WiFi password is wrong (the node says so on its console): provision the right one",
    "no_ap_found": (
        "the node does not find the WiFi (out of range, switched off, or its name is wrong in the inventory)"
    ),
    "connect_failed": "the WiFi refused the node (MAC filter, or too many clients?)",
    "broker_refused": "the broker refused the node's login: check its broker user and password (and the ACL)",
    "broker_unreachable": (
        "the node is on the WiFi but cannot reach the broker: check the broker's address as the node sees it, "
        "its port, and that the broker is running"
    ),
}
CERTAIN = {"wrong_password", "broker_refused", "connect_failed"}  # one report is enough
REPEATED = {"no_ap_found", "broker_unreachable"}  # may pass as the node starts: twice in a row is an answer


class ConsoleReader:
    """Reads the board's console in a thread (opening the port never resets the board) until stopped."""

    def __init__(self, port: str, baudrate: int = 115200) -> None:
        self.port = port
        self.baudrate = baudrate
        self.lines: deque[str] = deque(maxlen=KEEP)  # the console's last lines (garbage included: bounded)
        self.states: deque[tuple[str, str]] = deque(maxlen=KEEP)  # (state, words) in order
        self.unplugged = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node-console", daemon=True)

    def start(self) -> ConsoleReader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        import serial

        console = None
        pending = b""
        deadline = time.monotonic() + 10  # the port comes back within seconds of a reset
        while not self._stop.is_set():
            if console is None:
                if not os.path.exists(self.port):
                    if time.monotonic() > deadline:
                        self.unplugged = True
                    time.sleep(0.2)
                    continue
                try:
                    console = serial.Serial()
                    console.port, console.baudrate, console.timeout = self.port, self.baudrate, 0.2
                    console.dtr = console.rts = False  # auto-reset boards wire these to EN and BOOT
                    console.open()
                except (serial.SerialException, OSError):
                    console = None
                    time.sleep(0.2)
                    continue
            try:
                data = console.read(4096)
            except (serial.SerialException, OSError):
                with contextlib.suppress(Exception):
                    console.close()
                console = None
                self.unplugged = not os.path.exists(self.port)
                deadline = time.monotonic() + 3
                continue
            if not data:
                continue
            pending += data
            *complete, pending = pending.split(b"\n")
            pending = pending[-MAX_LINE:]  # noise without line ends never piles up
            for raw in complete:
                self._take(raw[:MAX_LINE].decode(errors="replace").strip())
        if console is not None:
            with contextlib.suppress(Exception):
                console.close()

    def _take(self, line: str) -> None:
        self.lines.append(line)
        found = LINE.search(line)
        if found:
            self.states.append((found.group(1), found.group(2)))

    @property
    def state(self) -> tuple[str, str] | None:
        return self.states[-1] if self.states else None

    def failure(self) -> str | None:
        """Why the node cannot report, once its console has made that plain; None while it is not (yet)."""
        if self.unplugged:
            return "the board was unplugged during the check (plug it back in and run setup again)"
        if not self.states:
            return None
        state, words = self.states[-1]
        if state in CERTAIN:
            return f"{ADVICE[state]} ({words})"
        failures = [s for s, _ in list(self.states) if s not in ("connecting", "got_ip")]
        if state in REPEATED and failures[-2:] == [state, state]:
            return f"{ADVICE[state]} ({words})"
        return None


def explain(line: str) -> str | None:
    """For `node monitor --port`: what a LINK line means for the technician, if it is a failure."""
    found = LINE.search(line)
    if found and found.group(1) in ADVICE:
        return f"  -> {ADVICE[found.group(1)]}"
    return None
