"""One name for one thing across the command line, every option explained with its default (field trial, 17),
and every option of every command parsed with a value of its kind."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gateway.cli import build_parser, parsers
from gateway.cli.options import address, broker_address

PARSER = build_parser()
ALL = parsers(PARSER)
# The one name each thing has; the others were used for it once and stay as hidden aliases, never shown.
RETIRED = {"--baud": "--baudrate", "--flash-baud": "--flash-baudrate", "--username": "--broker-user",
           "--password-env": "--broker-password-env", "--wait": "--timeout"}  # fmt: skip


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    skip = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
    return [a for a in parser._actions if not isinstance(a, skip)]


def test_every_option_and_argument_says_what_it_is() -> None:
    for parser in ALL:
        for action in _options(parser):
            if action.help == argparse.SUPPRESS:
                visible = [a for a in _options(parser) if a.dest == action.dest and a.help != argparse.SUPPRESS]
                assert visible or action.dest == "connect_attempts", f"{parser.prog} {action.option_strings}"
                continue
            assert action.help, f"{parser.prog} {action.option_strings or action.dest} has no help"


def test_every_default_is_shown() -> None:
    for parser in ALL:
        text = parser.format_help()
        for action in _options(parser):
            if action.help == argparse.SUPPRESS or action.default in (None, False, [], argparse.SUPPRESS):
                continue
            shown = str(action.default)
            flat = "".join(text.split())  # help is wrapped, long paths too: compare without any spaces
            assert "".join(shown.split()) in flat, f"{parser.prog} {action.option_strings}: default {shown} not shown"


def test_retired_names_are_shown_nowhere() -> None:
    for parser in ALL:
        for action in _options(parser):
            if action.help == argparse.SUPPRESS:
                continue
            for name in action.option_strings:
                assert name not in RETIRED, f"{parser.prog} shows {name}; it is {RETIRED[name]} everywhere"


@pytest.mark.parametrize(("old", "new"), sorted(RETIRED.items()))
def test_retired_names_still_work_as_the_new_ones(old: str, new: str) -> None:
    value = {"--baud": "57600", "--flash-baud": "115200", "--wait": "3"}.get(old, "someone")
    command = (
        ["node", "monitor", "--id", "x"]
        if old in ("--username", "--password-env")
        else ["node", "deploy", "--port", "/dev/null"]
    )
    if old == "--flash-baud":
        command = ["node", "flash", "--port", "/dev/null", "--firmware", "x.bin"]
    args_old = PARSER.parse_args([*command, old, value])
    args_new = PARSER.parse_args([*command, new, value])
    dest = next(a.dest for p in ALL for a in _options(p) if new in a.option_strings)
    assert getattr(args_old, dest) == getattr(args_new, dest)


def test_the_same_option_means_the_same_everywhere() -> None:
    """Options that several commands share take values of the same kind (a timeout is seconds everywhere)."""
    kinds: dict[str, set[str]] = {}
    for parser in ALL:
        for action in _options(parser):
            for name in action.option_strings:
                kind = getattr(action.type, "__name__", str(action.type)) if action.nargs != 0 else "flag"
                kinds.setdefault(name, set()).add(kind)
    for name in ("--timeout", "--duration", "--baudrate", "--broker", "--broker-user", "--json", "--port"):
        assert len(kinds[name]) == 1, f"{name} takes {kinds[name]} in different commands"
    assert kinds["--timeout"] == {"seconds"} and kinds["--duration"] == {"seconds"}


# A value of every kind, for every option of every command: each parses, and a bad one is a usage error.
GOOD = {"seconds": "1.5s", "positive_int": "9600", "unit_id": "7", "register_address": "0x10", "Path": "/tmp/x",
        "int": "1", "float": "0.5", "str": "x", "None": "x", "address_span": "1-20"}  # fmt: skip
BAD = {"seconds": "soon", "positive_int": "0", "unit_id": "300", "register_address": "70000", "int": "one",
       "address_span": "20-1"}  # fmt: skip


def _required(parser: argparse.ArgumentParser, leaving: argparse.Action | None = None) -> list[str]:
    argv: list[str] = []
    for group in parser._mutually_exclusive_groups:
        if group.required and not any(a is leaving for a in group._group_actions):
            first = group._group_actions[0]
            argv += [first.option_strings[0], "127.0.0.1:1502"]
    for action in _options(parser):
        if action is leaving:
            continue
        if action.option_strings and action.required:
            argv += [action.option_strings[0], _good(action)]
        elif not action.option_strings and action.nargs not in ("?", "*"):
            argv.append(_good(action))
    return argv


def _good(action: argparse.Action) -> str:
    if action.choices:
        return str(next(iter(action.choices)))
    return GOOD[getattr(action.type, "__name__", "None")]


def _command(parser: argparse.ArgumentParser) -> list[str]:
    return parser.prog.split()[1:]


LEAVES = [p for p in ALL if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)]
CASES = [(p, a) for p in LEAVES for a in _options(p) if a.option_strings and a.help != argparse.SUPPRESS]


@pytest.mark.parametrize(("parser", "action"), CASES, ids=[f"{p.prog[9:]} {a.option_strings[-1]}" for p, a in CASES])
def test_every_option_parses_a_value_of_its_kind(
    parser: argparse.ArgumentParser, action: argparse.Action, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [*_command(parser), *_required(parser, leaving=action)]
    name = action.option_strings[-1]
    given = [name] if action.nargs == 0 else [name, _good(action)]
    if isinstance(action, argparse._StoreAction) or action.nargs == 0 or isinstance(action, argparse._AppendAction):
        args = PARSER.parse_args([*base, *given])
        value = getattr(args, action.dest)
        assert value not in (None, False, [], action.default) or action.default == value
        kind = getattr(action.type, "__name__", "")
        if kind in BAD:
            with pytest.raises(SystemExit) as stop:
                PARSER.parse_args([*base, name, BAD[kind]])
            assert stop.value.code == 2
            said = capsys.readouterr().err
            assert f"argument {'/'.join(action.option_strings)}" in said and "Traceback" not in said


def test_addresses_are_read_the_same_way_everywhere() -> None:
    assert address("--tcp", "10.0.0.5", 502) == ("10.0.0.5", 502)
    assert address("--tcp", "meter.local:1502", 502) == ("meter.local", 1502)
    assert address("--tcp", "[fd00::5]:503", 502) == ("fd00::5", 503)
    assert address("--tcp", "fd00::5", 502) == ("fd00::5", 502)
    assert broker_address("10.0.0.1") == "10.0.0.1:1883" and broker_address(None) is None
    assert Path("/tmp/x")  # (Path values are taken as given; the commands check them)
