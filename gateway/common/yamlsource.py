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

from gateway.common.problems import ConfigError, KeyPath, Problem

MAX_FILE_BYTES = 16 * 1024 * 1024


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


MAX_DEPTH = 64  # mappings and lists inside each other; real files need fewer than ten
MAX_VALUES = 200_000  # values built, aliases expanded: a few hundred devices need a few thousand
MERGE = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, with a depth limit where it would otherwise recurse until Python gives up."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Refused(Exception):
    """Building stops: the document expands beyond the budget, recurses or nests too deeply."""

    def __init__(self, node: yaml.Node, path: KeyPath, message: str, *, expanding: bool = False) -> None:
        super().__init__(message)
        self.node, self.path, self.expanding = node, path, expanding


class _Builder:
    def __init__(self, file: str, loader: yaml.SafeLoader) -> None:
        self.source = YamlSource(file, None)
        self.loader = loader
        self.problems: list[Problem] = []
        self.built = 0
        self.active: list[int] = []  # ids of the nodes being built, outermost first: an alias to one is a cycle

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.built += 1
        if self.built > MAX_VALUES:
            raise _Refused(
                node, path, f"the document expands to more than {MAX_VALUES} values (an alias bomb?)", expanding=True
            )
        if id(node) in self.active:
            raise _Refused(node, path, "recursive alias: this anchor refers to itself")
        if len(self.active) >= MAX_DEPTH:
            raise _Refused(node, path, f"nested more than {MAX_DEPTH} levels deep (through aliases)", expanding=True)
        mark = node.start_mark
        self.source.values[path] = (mark.line + 1, mark.column + 1)
        if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            return self.loader.construct_object(node, deep=True)
        self.active.append(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            return self._mapping(node, path)
        finally:
            self.active.pop()

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[Any, Any]:
        pairs, merged = self._pairs(node, path)
        out: dict[Any, Any] = {}
        own_keys: set[Any] = set()
        for index, (key_node, value_node) in enumerate(pairs):
            if not isinstance(key_node, yaml.ScalarNode):
                self._add(key_node, path, "mapping keys must be plain scalars")
                continue
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

    def _pairs(self, node: yaml.MappingNode, path: KeyPath) -> tuple[list[tuple[yaml.Node, yaml.Node]], int]:
        """The mapping's pairs with `<<: *anchor` merges resolved (merged ones first), and how many were merged.

        Done here rather than by PyYAML, which copies merged pairs without limit.
        """
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        own: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != MERGE:
                own.append((key_node, value_node))
                continue
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in reversed(sources):  # the first source listed wins, as in PyYAML
                if not isinstance(source, yaml.MappingNode):
                    raise _Refused(source, path, "<< merges a mapping (or a list of mappings) into this one")
                if id(source) in self.active or source is node:
                    raise _Refused(source, path, "recursive alias: this anchor refers to itself")
                self.active.append(id(source))
                try:
                    inner, _ = self._pairs(source, path)
                finally:
                    self.active.pop()
                merged.extend(inner)
        self.built += len(merged)
        if self.built > MAX_VALUES:
            raise _Refused(
                node, path, f"the document expands to more than {MAX_VALUES} values (an alias bomb?)", expanding=True
            )
        return merged + own, len(merged)

    def _add(self, node: yaml.Node, path: KeyPath, message: str) -> None:
        m = node.start_mark
        self.problems.append(Problem(self.source.file, m.line + 1, m.column + 1, path, message))


def parse_yaml(text: str, file: str) -> YamlSource:
    """Parse one YAML document; raises ConfigError with a located message on any syntax error."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        root = loader.get_single_node()
        if root is None:
            return YamlSource(file, None)
        builder = _Builder(file, loader)
        builder.source.data = builder.build(root, ())
    except _Refused as exc:
        if exc.expanding:  # point at the setting that uses the aliases, not deep inside their expansion
            path = next((p for p in (exc.path[:2], exc.path[:1]) if p in builder.source.keys), exc.path[:1])
            line, col = builder.source.position(path, key=True)
        else:
            path, mark = exc.path, exc.node.start_mark
            line, col = mark.line + 1, mark.column + 1
        raise ConfigError([Problem(file, line, col, path, str(exc))]) from None
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
    return decode_yaml(read_file(path), str(path))


def read_file(path: Path) -> bytes:
    """A configuration or profile file's bytes; a missing, unreadable or oversized file is a located problem."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError([Problem(str(path), 1, 1, (), f"larger than {MAX_FILE_BYTES // 1024 // 1024} MB")])
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), 1, 1, (), "file not found")]) from None
    except OSError as exc:
        raise ConfigError([Problem(str(path), 1, 1, (), f"cannot read file: {exc.strerror}")]) from None


def decode_yaml(data: bytes, file: str) -> YamlSource:
    """Parse a file's bytes: UTF-8 text, or a problem at the first byte that is not."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = data[exc.start]
        problem = Problem(file, line, column, (), f"not UTF-8 text: byte 0x{byte:02x} ({exc.reason})")
        raise ConfigError([problem]) from None
    return parse_yaml(text, file)
