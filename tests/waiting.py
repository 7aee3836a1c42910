"""Bounded waiting for conditions in async tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(check: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait until check() holds; fail after `timeout` seconds (every loop in the suite is bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.02)
