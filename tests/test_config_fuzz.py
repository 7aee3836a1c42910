"""Fuzz the configuration and profile loaders: mangled files give ConfigError, never a crash."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.common.problems import ConfigError
from gateway.config.loader import load_config
from gateway.profiles.registry import SHIPPED_DIR, load_profile

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = (ROOT / "examples" / "cabinet-17.yaml").read_text()
DALI = (SHIPPED_DIR / "dali-modbus-gateway.yaml").read_text()

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(), st.text(max_size=12))
documents = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def _mutate(text: str, edits: list[tuple[int, str]]) -> str:
    for position, replacement in edits:
        at = position % (len(text) + 1)
        text = text[:at] + replacement + text[at + 1 :]
    return text


def _must_load_or_explain(path: Path, text: str, loader: object) -> None:
    path.write_text(text)
    try:
        loader(path)  # type: ignore[operator]
    except ConfigError as exc:
        assert exc.problems, "a ConfigError always says what is wrong"
        for problem in exc.problems:
            assert problem.line >= 1 and problem.column >= 1 and problem.message


settings_fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
edits = st.lists(
    st.tuples(st.integers(0, 5000), st.sampled_from(["", " ", ":", "-", "{", "]", "0", "x", "\n", "'", "#"])),
    min_size=1,
    max_size=6,
)


@settings_fuzz
@given(edits=edits)
@pytest.mark.long
def test_mangled_example_config(tmp_path: Path, edits: list[tuple[int, str]]) -> None:
    _must_load_or_explain(tmp_path / "site.yaml", _mutate(EXAMPLE, edits), load_config)


@settings_fuzz
@given(edits=edits)
def test_mangled_profile(tmp_path: Path, edits: list[tuple[int, str]]) -> None:
    _must_load_or_explain(tmp_path / "dali-modbus-gateway.yaml", _mutate(DALI, edits), load_profile)


@settings_fuzz
@given(doc=documents)
def test_random_documents_as_config_and_profile(tmp_path: Path, doc: object) -> None:
    text = yaml.safe_dump(doc)
    _must_load_or_explain(tmp_path / "site.yaml", text, load_config)
    _must_load_or_explain(tmp_path / "p.yaml", text, load_profile)


@settings_fuzz
@given(section=st.sampled_from(["links", "devices", "nodes", "mqtt", "store", "gateway"]), value=documents)
@pytest.mark.long
def test_random_values_in_each_section(tmp_path: Path, section: str, value: object) -> None:
    data = yaml.safe_load(EXAMPLE)
    data[section] = value
    _must_load_or_explain(tmp_path / "site.yaml", yaml.safe_dump(data), load_config)
