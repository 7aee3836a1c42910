"""`cityedge`: one command with subcommands. Exit 0 success, 1 runtime failure, 2 bad usage or configuration."""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence

from gateway import __version__
from gateway.cli.errors import UsageError
from gateway.common.problems import ConfigError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class DefaultsShown(argparse.HelpFormatter):
    """Every option's help ends with its default, when it has one worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and text != argparse.SUPPRESS
            and "default" not in text
            and default not in (None, False, [], argparse.SUPPRESS)
        ):
            text += " (default: %(default)s)"
        return text


def parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parser and every subcommand's, depth first."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += parsers(child)
    return found


# Each module registers its commands; in the order `cityedge --help` lists them.
MODULES = ("run", "demo", "check", "plan", "status", "probe", "meters", "profiles", "acl", "users", "node", "hil")
COMMANDS = {"read": "probe", "write": "probe", "mbus": "meters"}  # where a command's name is not its module's


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (given the command the line names) only that command's: a technician's `cityedge
    check` on a Raspberry Pi then loads what checking needs, not the probe, the node tools and the emulator too."""
    parser = argparse.ArgumentParser(prog="cityedge", description="CityEdge street-cabinet gateway")
    parser.add_argument("--version", action="version", version=f"cityedge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    module = COMMANDS.get(command or "", command)
    names = () if command == "" else (module,) if module in MODULES else MODULES  # "": only --version
    for name in names:
        importlib.import_module(f"gateway.cli.{name}").register(sub)
    for each in parsers(parser):
        each.formatter_class = DefaultsShown
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The command a line names: its first word that is not an option (the top level's take no values); "" for a
    line that only asks for the version; None for one that needs them all (--help, a mistake)."""
    word = next((word for word in argv if not word.startswith("-")), None)
    if word is None and "--version" in argv and not {"-h", "--help"} & set(argv):
        return ""
    return word


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(_command(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
        return result
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        print(f"{count} problem{'s' if count != 1 else ''} found", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"cityedge: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last line of defence: one clear line, traceback only on request
        if args.debug:
            traceback.print_exc()
        print(f"cityedge: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
