"""Durations as files write them (500ms, 5m, 2h45m): parsed to seconds, and written back the same way."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.common.types import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("10s", 10), ("5m", 300), ("1m30s", 90), ("2h45m", 9900), ("1d12h", 129600), ("0s", 0)],
)
def test_a_duration_reads_and_writes_the_same_way(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=400 * 86400) | st.integers(1, 999).map(lambda ms: ms / 1000))
def test_every_duration_written_reads_back_as_itself(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_fractions_of_a_second_above_one_stay_exact() -> None:
    assert format_duration(1.5) == "1.5s" and parse_duration("1.5s") == 1.5
