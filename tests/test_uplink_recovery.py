"""Back after an outage, soon: however long the broker was away, the uplink returns within seconds of it.

The waits between attempts are checked deterministically (the policy, and the
gateway's own loop with its sleeps recorded and fast-forwarded), never by waiting
out a real outage.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from gateway.app import Gateway
from gateway.north.mqtt import RECONNECT_MIN, ReconnectPolicy
from hil.broker import MosquittoBroker
from tests.mqtt_harness import Watcher, plain_config
from tests.waiting import until

BASE = "cityedge/hard"


def test_failed_attempts_back_off_to_a_bounded_interval() -> None:
    policy = ReconnectPolicy(2.0, random.Random(1))
    waits = [policy.after(None)[0] for _ in range(200)]  # hours of outage, in attempts
    assert 0.8 * RECONNECT_MIN <= waits[0] <= 1.2 * RECONNECT_MIN
    assert max(waits) <= 2.0 * 1.2 and min(waits[3:]) >= 2.0 * 0.8  # doubling, then capped with jitter
    assert all(not policy.after(None)[1] for _ in range(10))  # a broker that is away is no conflict


def test_a_drop_is_retried_at_once_and_then_backs_off_afresh() -> None:
    policy = ReconnectPolicy(2.0, random.Random(1))
    for _ in range(10):
        policy.after(None)
    assert policy.after(3600.0) == (0.0, False)  # the connection was up an hour: try again at once
    assert policy.after(None)[0] <= 1.2 * RECONNECT_MIN  # and, if that fails, start from the shortest wait


def test_connections_cut_off_again_and_again_mean_another_client_has_our_id() -> None:
    policy = ReconnectPolicy(2.0, random.Random(1))
    # The first connection is cut, then three times in a row the reconnect works at once and is cut again.
    outcomes = [policy.after(0.2) for _ in range(4)]
    assert [conflict for _, conflict in outcomes] == [False, False, False, True] and outcomes[-1][0] >= 30.0
    assert policy.after(0.2) == (0.0, False)  # counting starts again...
    policy.after(0.2)
    policy.after(0.2)
    second = policy.after(0.2)
    assert second[1] and second[0] == 2 * outcomes[-1][0]  # ...and each conflict doubles the pause
    assert policy.after(0.5, taken_over=True)[1]  # MQTT 5 reason 142 says so outright


def test_a_broker_that_restarts_while_we_retry_is_no_conflict() -> None:
    policy = ReconnectPolicy(2.0, random.Random(1))
    for _ in range(10):  # up briefly, dropped, the immediate retry refused, then back: a restarting broker
        assert policy.after(0.5) == (0.0, False)
        assert not policy.after(None)[1]


async def test_the_gateway_returns_within_seconds_of_a_broker_that_was_away_long(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    path = plain_config(tmp_path / "gw.yaml", mosquitto, mqtt={"reconnect_max": "2s"})
    watcher = Watcher(mosquitto)
    await watcher.start()
    gateway = Gateway(path)
    asked: list[float] = []

    async def fast_forward(seconds: float) -> None:  # every wait is recorded, and passes in a hundredth
        asked.append(seconds)
        await asyncio.sleep(0.01)

    gateway.mqtt.sleep = fast_forward
    await gateway.start()
    try:
        await watcher.topic(f"{BASE}/status")
        mosquitto.stop()
        await until(lambda: len(asked) >= 100, 30, "a hundred attempts while the broker is away")
        since = len(watcher.seen)
        await asyncio.to_thread(mosquitto.start)
        await watcher.wait_for(
            lambda s: s.topic == f"{BASE}/status" and s.json() == {"state": "online"}, since=since, timeout=15
        )
        assert max(asked) <= 2.0 * 1.2  # never a wait longer than reconnect_max (with its jitter)
    finally:
        await gateway.stop()
        await watcher.stop()
