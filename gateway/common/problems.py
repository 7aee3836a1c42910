"""Problems found in configuration and profile files, located by file, line, column and key path.

Every loader in CityEdge reports through `Problem` so that `cityedge check` can print
all of them at once in the `file:line:col: key.path: message` form editors understand.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

KeyPath = tuple[str | int, ...]


def format_path(path: KeyPath) -> str:
    """Render a key path the way an integrator reads it: `devices[1].profile`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    column: int
    path: KeyPath
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        key = format_path(self.path)
        return f"{where}: {key}: {self.message}" if key else f"{where}: {self.message}"


class ConfigError(Exception):
    """One or more problems that stop a configuration or profile from loading."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.column, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix when a close match exists, else ''."""
    import difflib  # only when something is misspelt: a running gateway does not pay for it

    pool = list(choices)
    close = [c for c in pool if c.lower() == word.lower()][:1]  # PIR for pir, Holding for holding
    close = close or difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if not close:
        # Integrators often type the model without the manufacturer prefix.
        close = [c for c in pool if c.endswith(word)][:1]
    return f" (did you mean '{close[0]}'?)" if close else ""
