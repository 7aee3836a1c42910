"""Shared fixtures (hil.fixtures) and the order tests start in."""

from __future__ import annotations

import pytest

pytest_plugins = ["hil.fixtures"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `long` (a real-time scenario, a board emulator, a fuzz loop) start first, the longest first
    (`long(60)`: about a minute): spread over the workers from the beginning, they end with the short ones
    instead of after them."""

    def expected(item: pytest.Item) -> float:
        marker = item.get_closest_marker("long")
        if marker is None:
            return 0.0
        return float(marker.args[0]) if marker.args else 10.0

    items.sort(key=expected, reverse=True)
