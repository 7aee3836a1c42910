"""Non-finite numbers from devices, nodes and operators: a per-point error, never a lost message or a dead task.

An independent Modbus peer answers NaN and infinity in float registers; fake nodes
(plain MQTT clients) send NaN, Infinity and huge numbers; an operator sends them in
commands. Everything else in those messages still arrives, audits are still written,
and the gateway still reconnects after a broker restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hil.broker import MosquittoBroker
from tests.mqtt_harness import Rig, peer_rig
from tests.peers import INF32, NAN32, ModbusPeer, float32

BASE = "cityedge/hard"


@pytest.fixture
async def rig(mosquitto: MosquittoBroker, tmp_path: Path) -> AsyncIterator[Rig]:
    peer = ModbusPeer()
    meter = peer.unit(1)
    meter.set_float32(0x00, float32(230.0))
    meter.set_float32(0x02, NAN32)
    meter.set_float32(0x04, INF32)
    meter.set_float32(0x46, float32(50.0))
    meter_config = {"id": "meter", "profile": "eastron-sdm630", "link": "net", "unit": 1, "poll": 0.2}
    async with peer_rig(mosquitto, tmp_path, peer, [meter_config], nodes=[{"id": "pole-1"}]) as rig:
        yield rig


async def test_nan_and_infinity_registers_are_point_errors(rig: Rig) -> None:
    w = rig.watcher
    state = (await w.topic(f"{BASE}/meter/state")).json()
    assert state["values"]["voltage_l1"] == 230.0 and state["values"]["frequency"] == 50.0
    assert "voltage_l2" not in state["values"] and "voltage_l3" not in state["values"]
    assert state["errors"]["voltage_l2"] == "not_a_number"
    assert state["errors"]["voltage_l3"] == "infinite"
    health = (await w.topic(f"{BASE}/meter/health")).json()
    assert health["state"] == "degraded"


async def test_reading_a_nan_point_on_request_is_answered(rig: Rig) -> None:
    w = rig.watcher
    await w.topic(f"{BASE}/meter/state")
    answer = await w.request(BASE, "read", {"device": "meter", "point": "voltage_l2"})
    assert answer["status"] == "error" and answer["error"]["code"] == "not_a_number"
    answer = await w.request(BASE, "read", {"device": "meter", "point": "voltage_l1"})
    assert answer["status"] == "ok" and answer["data"]["value"] == 230.0


def _telemetry(body: str) -> bytes:
    return body.replace("TS", str(int(time.time() * 1000))).encode()


async def test_node_nan_and_infinity_are_point_errors(rig: Rig) -> None:
    w = rig.watcher
    await w.topic(f"{BASE}/status")
    await w.send(
        "nodes/pole-1/telemetry",
        _telemetry('{"ts": TS, "seq": 1, "values": {"lux": NaN, "temp": 21.5, "rh": Infinity, "vbat": -Infinity}}'),
    )
    state = (await w.topic(f"{BASE}/pole-1/state")).json()
    assert state["values"] == {"temperature": 21.5}
    assert state["errors"] == {"illuminance": "not_a_number", "humidity": "infinite", "battery": "infinite"}
    await w.send("nodes/pole-1/telemetry", _telemetry('{"ts": TS, "seq": 2, "values": {"lux": 1e999, "temp": 22}}'))
    state = (await w.wait_for(lambda s: s.topic == f"{BASE}/pole-1/state" and s.json().get("seq") == 2)).json()
    assert state["values"] == {"temperature": 22} and state["errors"] == {"illuminance": "infinite"}


async def test_node_health_with_nan_does_not_stop_reconnecting(rig: Rig) -> None:
    w = rig.watcher
    await w.topic(f"{BASE}/status")
    await w.send("nodes/pole-1/health", b'{"rssi": NaN, "free_heap": Infinity, "uptime_s": 12}')
    health = (await w.wait_for(lambda s: s.topic == f"{BASE}/pole-1/health" and s.json()["node"])).json()
    assert health["node"] == {"uptime_s": 12}
    since = len(w.seen)
    rig.broker.restart()  # the birth messages republish the node's health on the new connection
    await w.wait_for(lambda s: s.topic == f"{BASE}/status" and s.json() == {"state": "online"}, since=since, timeout=15)
    again = await w.wait_for(lambda s: s.topic == f"{BASE}/pole-1/health", since=since, timeout=10)
    assert again.json()["node"] == {"uptime_s": 12}


async def test_commands_carrying_non_finite_numbers_are_refused_and_audited(rig: Rig) -> None:
    w = rig.watcher
    await w.topic(f"{BASE}/status")
    for literal in ("NaN", "Infinity", "-Infinity", "1e999"):
        transaction = f"t-{literal}"
        since = len(w.seen)
        await w.send(
            f"{BASE}/pole-1/set", f'{{"transaction": "{transaction}", "values": {{"report_interval": {literal}}}}}'
        )
        result = await w.wait_for(
            lambda s, t=transaction: s.topic == f"{BASE}/pole-1/set/result" and s.json()["transaction"] == t,
            since=since,
        )
        error = result.json()["error"]
        assert result.json()["status"] == "error" and error["code"] == "bad_type", error
        assert error["point"] == "report_interval"
        audit = await w.wait_for(
            lambda s, t=transaction: (
                s.topic == f"{BASE}/event" and s.json().get("kind") == "command" and s.json().get("transaction") == t
            ),
            since=since,
        )
        assert audit.json()["status"] == "error"
        assert json.loads(audit.payload)["values"] == {"report_interval": literal.replace("1e999", "Infinity")}
