"""YAML loading with positions: anchors, merges, duplicate keys, syntax and encoding errors."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.common.problems import ConfigError, Problem, did_you_mean, format_path
from gateway.common.yamlsource import load_yaml, parse_yaml
from gateway.profiles.expr import ExpressionError, evaluate


def test_positions_of_keys_and_values() -> None:
    source = parse_yaml("a:\n  b: [1, {c: 2}]\n", "f.yaml")
    assert source.data == {"a": {"b": [1, {"c": 2}]}}
    assert source.position(("a", "b", 1, "c")) == (2, 14)
    assert source.position(("a", "b", 1, "c"), key=True) == (2, 11)
    assert source.position(("a", "missing")) == (2, 3)  # falls back to the parent's value


def test_anchors_and_merge_keys() -> None:
    source = parse_yaml("base: &b {poll: 1s, unit: 1}\ndev:\n  <<: *b\n  unit: 2\n", "f.yaml")
    assert source.data["dev"] == {"poll": "1s", "unit": 2}


def test_duplicate_keys_are_errors_not_last_one_wins() -> None:
    with pytest.raises(ConfigError) as info:
        parse_yaml("a: 1\nb: 2\na: 3\n", "f.yaml")
    assert [str(p) for p in info.value.problems] == ["f.yaml:3:1: a: duplicate key 'a'"]


def test_syntax_error_is_located() -> None:
    with pytest.raises(ConfigError) as info:
        parse_yaml("a: [1, 2\nb: 3\n", "f.yaml")
    (problem,) = info.value.problems
    assert (problem.line, problem.message.startswith("YAML syntax error")) == (2, True)


def test_tabs_and_complex_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="YAML syntax error"):
        parse_yaml("a:\n\tb: 1\n", "f.yaml")
    with pytest.raises(ConfigError, match="mapping keys must be plain scalars"):
        parse_yaml("? [a, b]\n: 1\n", "f.yaml")


def test_unreadable_files(tmp_path: Path) -> None:
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_yaml(binary)
    with pytest.raises(ConfigError, match="cannot read file"):
        load_yaml(tmp_path)


def test_problem_formatting() -> None:
    assert format_path(("devices", 1, "profile")) == "devices[1].profile"
    assert str(Problem("f.yaml", 3, 5, (), "boom")) == "f.yaml:3:5: boom"
    assert did_you_mean("sdm630", ["eastron-sdm630", "magflow-meter"]) == " (did you mean 'eastron-sdm630'?)"
    assert did_you_mean("zzz", ["eastron-sdm630"]) == ""


@given(st.text(max_size=200))
def test_any_text_parses_or_gives_a_located_error(text: str) -> None:
    try:
        parse_yaml(text, "fuzz.yaml")
    except ConfigError as exc:
        assert all(p.file == "fuzz.yaml" and p.line >= 1 and p.column >= 1 for p in exc.problems)


def test_expressions() -> None:
    assert evaluate("7000 * line + 6400", {"line": 2}) == 20400
    assert evaluate(5, {}) == 5
    assert evaluate("-(a // 2) % 7", {"a": 9}) == 3
    for bad, message in [
        ("__import__('os')", "only integers"),
        ("line ** 2", "only integers"),
        ("1.5 * line", "only integers"),
        ("x + 1", "unknown name 'x'"),
        ("1 // 0", "division by zero"),
        ("7000 *", "cannot parse"),
    ]:
        with pytest.raises(ExpressionError, match=message):
            evaluate(bad, {"line": 1})


@given(st.text(max_size=40))
def test_expression_fuzz_never_escapes(text: str) -> None:
    with contextlib.suppress(ExpressionError, RecursionError, MemoryError):
        assert isinstance(evaluate(text, {"line": 1}), int)
