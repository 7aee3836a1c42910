"""The docs' examples run: shown commands succeed and print what the page shows; YAML examples validate."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.common.problems import ConfigError
from gateway.common.validate import validate
from gateway.common.yamlsource import parse_yaml
from gateway.config.model import GatewayConfig
from gateway.profiles.expand import expand
from gateway.profiles.model import parse_profile
from gateway.south.modbus.profile import place
from hil.site.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
PAGES = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)


def _blocks(page: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(page.read_text())]


def is_session(body: str) -> bool:
    """A block that starts programs in the background (`... &`) is a session, followed whole by its own test
    (tests/test_rehearsal.py), not command by command here."""
    return any(line.split("  #")[0].rstrip().endswith("&") for line in body.splitlines())


def _commands() -> list[tuple[str, str, str | None]]:
    """(page, command, the plain block right after it if any) for every cityedge command shown."""
    out = []
    for page in PAGES:
        blocks = _blocks(page)
        for i, (lang, body) in enumerate(blocks):
            if lang != "sh" or is_session(body):
                continue
            lines = [line.split("  #")[0].strip() for line in body.splitlines()]
            commands = [line for line in lines if line.startswith(".venv/bin/cityedge ")]
            following = blocks[i + 1][1] if i + 1 < len(blocks) and blocks[i + 1][0] == "" else None
            for command in commands:
                out.append((page.name, command, following if len(commands) == 1 else None))
    return out


COMMANDS = _commands()


def test_docs_show_commands() -> None:
    assert len(COMMANDS) >= 8


def test_every_session_block_is_followed_by_a_test() -> None:
    from tests.test_rehearsal import SESSIONS

    sessions = [(p.name, body) for p in PAGES for lang, body in _blocks(p) if lang == "sh" and is_session(body)]
    for page, body in sessions:
        assert any(page == known and marker in body for known, marker in SESSIONS), f"{page}: untested session"


def _run(page: str, command: str, expected: str | None) -> Any:
    """A scenario runs for its whole timeline (the README's for a minute): long."""
    long = [pytest.mark.long(60 if page == "README.md" else 20)] if " hil run " in command else []
    return pytest.param(page, command, expected, marks=long, id=f"{page}:{command[19:50]}")


RUNS = [_run(*c) for c in COMMANDS]


@pytest.mark.parametrize(("page", "command", "expected"), RUNS)
def test_documented_command_runs(page: str, command: str, expected: str | None) -> None:
    argv = shlex.split(command.split(" > ", maxsplit=1)[0])[1:]
    if argv[:2] == ["hil", "serve"]:  # runs until stopped: run it briefly; its endpoints vary per run
        argv += ["--duration", "2"]
        expected = None
    result = subprocess.run(
        [sys.executable, "-m", "gateway", *argv], capture_output=True, text=True, cwd=ROOT, timeout=180, check=False
    )
    output = result.stdout + result.stderr
    shows_failure = expected is not None and "problems found" in expected
    assert result.returncode == (2 if shows_failure else 0), output
    if expected is None:
        return
    shown = [line for line in expected.splitlines() if line.strip() and line.strip() != "..."]
    if "..." in expected:
        for line in shown:
            assert line in output.splitlines(), f"{page}: '{line}' is not in the output of {command}"
    else:
        assert output.splitlines() == shown


def _yaml_examples(start: str) -> list[tuple[str, str]]:
    return [(p.name, body) for p in PAGES for lang, body in _blocks(p) if lang == "yaml" and body.startswith(start)]


def _is_scenario(text: str) -> bool:
    return "\nmanufacturer:" not in text  # every profile names its manufacturer; scenarios never do


@pytest.mark.parametrize(("page", "text"), [e for e in _yaml_examples("name:") if _is_scenario(e[1])])
def test_scenario_examples_validate(page: str, text: str, tmp_path: Path) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    load_scenario(path)


@pytest.mark.parametrize(("page", "text"), [e for e in _yaml_examples("name:") if not _is_scenario(e[1])])
def test_profile_examples_validate(page: str, text: str) -> None:
    profile = parse_profile(parse_yaml(text, page))
    assert expand(profile)[1] == []


@pytest.mark.parametrize(("page", "text"), _yaml_examples("gateway:"))
def test_config_examples_validate(page: str, text: str) -> None:
    try:
        validate(parse_yaml(text, page), GatewayConfig)
    except ConfigError as exc:
        pytest.fail(str(exc))


def test_repeat_example_addresses() -> None:
    (page, text), *_ = [e for e in _yaml_examples("name:") if "dali-line-example" in e[1]]
    resolved, _ = expand(parse_profile(parse_yaml(text, page)), {"line": 1})
    point = resolved.point("ballast_3_level")
    assert point is not None
    assert place(point).address == 7306
