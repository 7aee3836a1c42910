"""pytest fixtures for the whole suite: a real broker, emulated sites, pty lines.

Enable with `pytest_plugins = ["hil.fixtures"]` in a conftest.py. A tool that the
README's set-up installs (mosquitto) is never skipped over: its absence fails the
test with the command that fixes it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hil.broker import MosquittoBroker, find_mosquitto
from hil.scenario import load_scenario
from hil.site import Site

SiteFactory = Callable[[dict[str, Any]], Awaitable[Site]]

logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


@pytest.fixture
def mosquitto() -> Iterator[MosquittoBroker]:
    """A fresh mosquitto on a free loopback port, stopped after the test."""
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed: run scripts/setup (or: sudo apt-get install mosquitto)")
    with MosquittoBroker() as broker:
        yield broker


@pytest.fixture
async def site_factory(tmp_path: Path) -> AsyncIterator[SiteFactory]:
    """Build and start emulated sites from scenario data; all of them stop after the test."""
    sites: list[Site] = []

    async def make(data: dict[str, Any]) -> Site:
        data = {"name": f"test-{len(sites)}", **data}
        path = tmp_path / f"{data['name']}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        site = Site(load_scenario(path))
        await site.start()
        sites.append(site)
        return site

    yield make
    for site in sites:
        await site.stop()
