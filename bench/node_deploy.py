"""How long `cityedge node deploy` takes, and how many bytes cross the USB cable, against the emulated board.

Three cases: a blank board (everything written), the same app again (nothing written: hashes only)
and one module changed. The emulated board has no baud rate, so the wire time a real ESP32 needs
is estimated from the bytes at 115200 baud (10 bits per byte), a lower bound: USB-serial latency
adds about a millisecond per exchange on top.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import report
from gateway.technician.deploy import FIRMWARE, deploy
from gateway.technician.serial_board import Board
from hil.fixtures import BoardProcess

BAUD_BYTES_PER_S = 115200 / 10


class CountingBoard(Board):
    def open(self) -> None:
        super().open()
        serial = self.transport.serial
        self.sent = self.received = 0
        write, read = serial.write, serial.read

        def counted_write(data: bytes) -> int | None:
            self.sent += len(data)
            return write(data)

        def counted_read(size: int = 1) -> bytes:
            data = read(size)
            self.received += len(data)
            return data

        serial.write, serial.read = counted_write, counted_read


def run_case(port: str, app: Path) -> tuple[float, int, int, int]:
    started = time.perf_counter()
    with CountingBoard(port) as board:
        result = deploy(board, app)
        sent, received = board.sent, board.received
    return time.perf_counter() - started, len(result.written), sent, received


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="cityedge-bench-") as tmp:
        app = Path(tmp) / "app"
        shutil.copytree(FIRMWARE, app)
        board = BoardProcess(Path(tmp) / "board", None, None)
        try:
            cases = [("blank board", run_case(board.port, app)), ("unchanged", run_case(board.port, app))]
            (app / "sensors.py").write_text((app / "sensors.py").read_text() + "\nCHANGED = 1\n")
            cases.append(("one module changed", run_case(board.port, app)))
        finally:
            board.stop()
    rows, data = [], []
    for name, (seconds, written, sent, received) in cases:
        wire = (sent + received) / BAUD_BYTES_PER_S
        rows.append([name, written, f"{seconds:.2f} s", f"{sent:,}", f"{received:,}", f"{wire:.1f} s"])
        data.append({"case": name, "written": written, "seconds": seconds, "sent": sent, "received": received,
                     "wire_s_115200": wire})  # fmt: skip
    report(
        "node_deploy",
        ["case", "files written", "emulated board", "bytes to board", "bytes from board", "wire time at 115200"],
        rows,
        data,
    )


if __name__ == "__main__":
    main()
