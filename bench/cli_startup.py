"""How long the technician's commands take from the shell, measured from outside as whole processes.

Each command runs `--runs` times (default 10) as `python -m gateway ...`; the figure is the median wall time
and the median CPU time of the process (user + system, from the kernel's accounting of the child). Also the
time to load a configuration inside one process, the first time and again (a reload reads the same profiles).
On a Raspberry Pi the figures are several times these; their ratios hold.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, report

EXAMPLE = ROOT / "docs" / "integrator" / "examples" / "automated-cabinet.yaml"


def timed(argv: list[str], runs: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(runs):
        before = os.times()
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gateway", *argv], cwd=ROOT, capture_output=True, check=True)
        walls.append(time.perf_counter() - start)
        after = os.times()
        cpus.append(after.children_user - before.children_user + after.children_system - before.children_system)
    return statistics.median(walls), statistics.median(cpus)


def config_loads(runs: int) -> tuple[float, float]:
    code = (
        "import sys, time; from pathlib import Path; from gateway.config.loader import load_config\n"
        "p = Path(sys.argv[1]); t = time.perf_counter(); load_config(p); first = time.perf_counter() - t\n"
        "t = time.perf_counter()\n"
        f"for _ in range({runs}): load_config(p)\n"
        f"print(first, (time.perf_counter() - t) / {runs})"
    )
    out = subprocess.run([sys.executable, "-c", code, str(EXAMPLE)], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()  # fmt: skip
    return float(out[0]), float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        users = Path(tmp) / "users.json"
        users.write_text('{"users": {}}')
        commands = {
            "cityedge --version": ["--version"],
            "cityedge users list": ["users", "list", "-f", str(users)],
            "cityedge check (a cabinet with automation)": ["check", "-c", str(EXAMPLE), "--portable"],
            "cityedge profiles list": ["profiles", "list"],
        }
        rows, data = [], {}
        for name, argv in commands.items():
            wall, cpu = timed(argv, args.runs)
            rows.append([name, f"{wall * 1000:.0f}", f"{cpu * 1000:.0f}"])
            data[name] = {"wall_s": wall, "cpu_s": cpu}
    first, again = config_loads(args.runs)
    rows.append(["load_config, first in a process", f"{first * 1000:.0f}", ""])
    rows.append(["load_config, again (a reload)", f"{again * 1000:.0f}", ""])
    data["load_config"] = {"first_s": first, "again_s": again}
    report("cli_startup", ["command", "wall ms (median)", "CPU ms (median)"], rows, data)


if __name__ == "__main__":
    main()
