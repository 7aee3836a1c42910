"""Errors the command line turns into exit statuses."""


class UsageError(Exception):
    """Bad arguments discovered after parsing; reported like argparse errors (exit 2)."""
