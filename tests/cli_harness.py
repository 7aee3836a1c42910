"""Run the installed `cityedge` command as a user would: a subprocess, its output captured, stdin closed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CITYEDGE = str(Path(sys.executable).parent / "cityedge")


def cityedge(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CITYEDGE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
