"""A connection the broker drops while nothing iterates its messages leaves no error for asyncio to log later."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

import aiomqtt
import pytest

from gateway.north.mqtt_client import connection
from hil.broker import MosquittoBroker
from tests.waiting import until


async def _dropped(client: aiomqtt.Client, broker: MosquittoBroker, settled: bool) -> None:
    """Connect, lose the broker (a power cut), leave the context without reading the messages."""
    context = connection(client) if settled else client
    with contextlib.suppress(aiomqtt.MqttError):
        async with context:
            broker.kill()
            await until(client._disconnected.done, 10, "the lost connection noticed")


def _never_retrieved(caplog: pytest.LogCaptureFixture) -> list[str]:
    gc.collect()
    return [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]


async def test_the_reason_of_a_lost_connection_is_taken(
    mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="asyncio")
    await _dropped(aiomqtt.Client(mosquitto.host, mosquitto.port, keepalive=1), mosquitto, settled=True)
    await asyncio.sleep(0)
    assert _never_retrieved(caplog) == []
    # what it guards against: aiomqtt alone leaves the reason for asyncio to log when the future is collected
    mosquitto.start()
    await _dropped(aiomqtt.Client(mosquitto.host, mosquitto.port, keepalive=1), mosquitto, settled=False)
    await asyncio.sleep(0)
    assert any("Unexpected disconnection" in m for m in _never_retrieved(caplog))
