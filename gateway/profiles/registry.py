"""Find, load and check device profiles in the shipped `device_profiles/` and extra directories.

Later directories win, so a site can replace a shipped profile by giving its own
file the same name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import device_profiles
from gateway.common.problems import ConfigError, Problem
from gateway.common.yamlsource import YamlSource, decode_yaml, read_file
from gateway.profiles.expand import Issue, ResolvedProfile, expand
from gateway.profiles.model import Profile, parse_profile

SHIPPED_DIR = Path(device_profiles.__file__).parent


class ProfileRegistry:
    def __init__(self, extra_dirs: Iterable[Path] = ()) -> None:
        self.dirs = [SHIPPED_DIR, *extra_dirs]
        self._paths: dict[str, Path] = {}
        for directory in self.dirs:
            if directory.is_dir():
                for path in sorted(directory.glob("*.y*ml")):
                    self._paths[path.stem] = path
        self._loaded: dict[str, tuple[Profile, YamlSource]] = {}

    def names(self) -> list[str]:
        return sorted(self._paths)

    def path(self, name: str) -> Path | None:
        return self._paths.get(name)

    def load(self, name: str) -> tuple[Profile, YamlSource]:
        """The validated profile and its source positions; ConfigError for any problem in the file."""
        if name not in self._loaded:
            path = self._paths.get(name)
            if path is None:
                raise KeyError(name)
            self._loaded[name] = load_profile(path)
        return self._loaded[name]


_LOADED: dict[tuple[str, bytes], tuple[Profile, YamlSource]] = {}  # (file, digest of its bytes): checked profile
_KEEP = 256


def load_profile(path: Path) -> tuple[Profile, YamlSource]:
    """Load one profile file and check it with its default parameters. A file read before with the same bytes
    is not parsed again (profiles are immutable): a reload, `cityedge check` and every gateway of a test run
    share the work; a changed file is read anew."""
    data = read_file(path)
    key = (str(path), hashlib.blake2b(data, digest_size=16).digest())
    if key not in _LOADED:
        if len(_LOADED) >= _KEEP:
            del _LOADED[next(iter(_LOADED))]
        _LOADED[key] = _check(path, decode_yaml(data, str(path)))
    return _LOADED[key]


def _check(path: Path, source: YamlSource) -> tuple[Profile, YamlSource]:
    profile = parse_profile(source)
    problems: list[Problem] = []
    if profile.name != path.stem:
        problems.append(source.problem(("name",), f"name '{profile.name}' must match the file name '{path.stem}'"))
    _, issues = expand(profile)
    problems.extend(issue_problem(source, issue) for issue in issues)
    if problems:
        raise ConfigError(problems)
    return profile, source


def issue_problem(source: YamlSource, issue: Issue) -> Problem:
    return source.problem(issue.path, issue.message, key=issue.key)


def resolve(profile: Profile) -> ResolvedProfile:
    """Resolve with defaults only (for listing and showing profiles)."""
    resolved, _ = expand(profile)
    return resolved
