"""YAML loading that remembers where every key and value came from.

PyYAML forgets positions once it builds Python objects; integrators need
`file:line:col` for every mistake, so we walk the composed node tree ourselves
and keep a map from key path to source position. Duplicate keys, which PyYAML
silently lets the last one win, are reported as problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.config.problems import ConfigError, KeyPath, Problem


@dataclass(slots=True)
class YamlSource:
    """Parsed YAML data plus the position of every value and key inside it."""

    file: str
    data: Any
    values: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)

    def position(self, path: KeyPath, *, key: bool = False) -> tuple[int, int]:
        """Line and column (1-based) of `path`, falling back to the nearest parent that exists."""
        probe = path
        while True:
            if key and probe in self.keys:
                return self.keys[probe]
            if probe in self.values:
                return self.values[probe]
            if not probe:
                return (1, 1)
            probe = probe[:-1]

    def problem(self, path: KeyPath, message: str, *, key: bool = False) -> Problem:
        line, col = self.position(path, key=key)
        return Problem(self.file, line, col, path, message)

    def resolve(self, loc: tuple[Any, ...]) -> KeyPath:
        """Map a validator's location onto the real data, dropping parts that are not keys.

        Validation libraries put union tags and type names into locations; only the
        parts that actually index into the document are kept.
        """
        node = self.data
        out: list[str | int] = []
        for part in loc:
            if (isinstance(node, dict) and part in node) or (
                isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
            ):
                out.append(part)
                node = node[part]
            elif isinstance(node, dict) and isinstance(part, str | int) and part == loc[-1]:
                out.append(part)  # a missing key: report it under its parent
                break
        return tuple(out)


class _Builder:
    def __init__(self, file: str, loader: yaml.SafeLoader) -> None:
        self.source = YamlSource(file, None)
        self.loader = loader
        self.problems: list[Problem] = []

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        mark = node.start_mark
        self.source.values[path] = (mark.line + 1, mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            own = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
            self.loader.flatten_mapping(node)  # honour `<<: *anchor` merges; merged pairs come first
            merged = len(node.value) - own
            out: dict[Any, Any] = {}
            own_keys: set[Any] = set()
            for index, (key_node, value_node) in enumerate(node.value):
                key = self.loader.construct_object(key_node, deep=True)
                if not isinstance(key, str | int | float | bool) or key is None:
                    self._add(key_node, path, "mapping keys must be plain scalars")
                    continue
                child: KeyPath = (*path, key if isinstance(key, int) else str(key))
                if key in own_keys:
                    self._add(key_node, child, f"duplicate key '{key}'")
                    continue
                if index >= merged:  # keys merged from anchors may be overridden, this mapping's own may not
                    own_keys.add(key)
                km = key_node.start_mark
                self.source.keys[child] = (km.line + 1, km.column + 1)
                out[key] = self.build(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.loader.construct_object(node, deep=True)

    def _add(self, node: yaml.Node, path: KeyPath, message: str) -> None:
        m = node.start_mark
        self.problems.append(Problem(self.source.file, m.line + 1, m.column + 1, path, message))


def parse_yaml(text: str, file: str) -> YamlSource:
    """Parse one YAML document; raises ConfigError with a located message on any syntax error."""
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)
        root = loader.get_single_node()
        if root is None:
            return YamlSource(file, None)
        builder = _Builder(file, loader)
        builder.source.data = builder.build(root, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = exc.problem or exc.context or "invalid YAML"
        raise ConfigError([Problem(file, line, col, (), f"YAML syntax error: {reason}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, 1, 1, (), f"YAML error: {exc}")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if builder.problems:
        raise ConfigError(builder.problems)
    return builder.source


def load_yaml(path: Path) -> YamlSource:
    """Read and parse a YAML file; unreadable files become located problems, not tracebacks."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), 1, 1, (), "file not found")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(str(path), 1, 1, (), f"not UTF-8 text ({exc.reason})")]) from None
    except OSError as exc:
        raise ConfigError([Problem(str(path), 1, 1, (), f"cannot read file: {exc.strerror}")]) from None
    return parse_yaml(text, str(path))
