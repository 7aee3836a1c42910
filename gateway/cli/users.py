"""`cityedge users`: the dashboard's users and their password hashes.

    cityedge users add ana -f /etc/cityedge/dashboard-users.json      # asks for the password twice
    echo "$PASSWORD" | cityedge users add ana -f users.json --password-stdin
    cityedge users list -f users.json
    cityedge users remove ana -f users.json

`-c FILE` instead of `-f` takes the users file the configuration's `dashboard.users` names.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from gateway.cli.errors import UsageError


def register(sub: Any) -> None:
    p = sub.add_parser("users", help="dashboard users: add (or change the password), remove, list")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (("add", "add a user or set a new password"), ("remove", "remove a user"),
                       ("list", "list the users")):  # fmt: skip
        each = actions.add_parser(name, help=text)
        if name != "list":
            each.add_argument("name", help="the user's login name")
        where = each.add_mutually_exclusive_group(required=True)
        where.add_argument("-f", "--file", type=Path, help="the users file")
        where.add_argument("-c", "--config", type=Path, metavar="FILE", help="the gateway configuration")
        if name == "add":
            each.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
        each.set_defaults(handler=run)


def _file(args: argparse.Namespace) -> Path:
    if args.file is not None:
        return Path(args.file)
    from gateway.config.loader import load_config

    config = load_config(args.config).config
    if config.dashboard is None:
        raise UsageError(f"{args.config} has no dashboard section: give the users file with -f")
    return config.dashboard.users


def run(args: argparse.Namespace) -> int:
    from gateway.north.dashboard.users import UserError, Users

    path = _file(args)
    try:
        users = Users.load(path)
        if args.action == "list":
            for name, entry in sorted(users.users.items()):
                print(f"{name}\tadded {entry.get('added', '?')}")
            return 0
        if args.action == "remove":
            users.remove(args.name)
        else:
            if args.password_stdin:
                password = sys.stdin.readline().rstrip("\n")
            else:
                password = getpass.getpass(f"password for {args.name}: ")
                if getpass.getpass("again: ") != password:
                    raise UsageError("the two passwords differ")
            users.set(args.name, password)
        users.save()
    except UserError as exc:
        raise UsageError(str(exc)) from None
    print(f"{args.action}: {args.name} in {path}", file=sys.stderr)
    return 0
