"""Every command and request gets exactly one result: bursts, floods and ten thousand malformed messages.

The gateway polls an independent Modbus peer (a DALI line and a feeder relay) while
an operator's client sends a burst of valid commands, then fuzzed commands and
requests of every malformed kind. Every message is answered exactly once (ok, a
refusal with its reason, or `busy`), polling goes on, and the log holds no traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.north.extensions import commands as commands_feature
from hil.broker import MosquittoBroker
from tests.mqtt_harness import Rig, Watcher, peer_rig
from tests.peers import ModbusPeer

BASE = "cityedge/hard"
REPLIES = "fuzz/replies"


DEVICES = [
    {
        "id": "lamps",
        "profile": "dali-modbus-gateway",
        "link": "net",
        "unit": 1,
        "poll": 0.5,
        "params": {"ballasts": 4, "groups": 16},
        "report": {"mode": "periodic"},
    },
    {"id": "relay", "profile": "feeder-protection-relay", "link": "net", "unit": 2, "poll": 0.5},
]


def _peer() -> ModbusPeer:
    peer = ModbusPeer()
    peer.unit(1)  # the DALI line
    peer.unit(2)  # the relay
    return peer


@pytest.fixture
async def rig(mosquitto: MosquittoBroker, tmp_path: Path) -> AsyncIterator[Rig]:
    # the peer answers in the gateway's own event loop: on a loaded machine a stall of the loop is not the
    # device's silence, and every command here is to be answered ok
    async with peer_rig(mosquitto, tmp_path, _peer(), DEVICES, link_timeout=3.0) as rig:
        yield rig


def _is_answer(topic: str) -> bool:
    return topic.endswith("/set/result") or topic.startswith((f"{BASE}/response/", f"{REPLIES}/"))


async def _send_all(w: Watcher, messages: list[tuple[str, bytes, Properties | None]]) -> None:
    for start in range(0, len(messages), 200):
        chunk = messages[start : start + 200]
        await asyncio.gather(*(w.send(topic, body, properties=props) for topic, body, props in chunk))


async def _answers(w: Watcher, since: int, expected: int, timeout: float = 90) -> list[Any]:
    count = [0]

    def counted(seen: Any) -> bool:  # called once per new message
        count[0] += _is_answer(seen.topic)
        return count[0] >= expected

    await w.wait_for(counted, timeout=timeout, since=since, what=f"{expected} answers")
    await asyncio.sleep(0.5)  # anything extra (a second answer to one message) would arrive now
    return [x for x in w.seen[since:] if _is_answer(x.topic)]


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    tracebacks = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not tracebacks, [r.getMessage() for r in tracebacks][:5]


async def test_a_burst_of_a_thousand_valid_commands_is_all_answered(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    w = rig.watcher
    await w.topic(f"{BASE}/lamps/state")
    messages = [
        (
            f"{BASE}/lamps/set",
            json.dumps({"transaction": f"dusk-{i}", "values": {f"group_{i % 16}_arc_power": i % 101}}).encode(),
            None,
        )
        for i in range(1000)
    ]
    since = len(w.seen)
    await _send_all(w, messages)
    answers = await _answers(w, since, 1000)
    by_transaction = Counter(a.json()["transaction"] for a in answers)
    assert len(answers) == 1000 and all(by_transaction[f"dusk-{i}"] == 1 for i in range(1000))
    statuses = Counter(a.json()["status"] for a in answers)
    assert statuses == {"ok": 1000}, [a.json() for a in answers if a.json()["status"] != "ok"][:5]
    assert rig.peer.units[1].writes == 1000  # and each one reached the device
    _no_tracebacks(caplog)


def _fuzz_messages(rng: random.Random, count: int) -> tuple[list[tuple[str, bytes, Properties | None]], set[str]]:
    """Malformed commands and requests of every kind; returns them and the transactions they carry."""
    deep = b'{"transaction": "d", "values": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    messages: list[tuple[str, bytes, Properties | None]] = []
    carried: set[str] = set()
    for i in range(count):
        t = f"z{i}"
        kind = i % 24
        topic = f"{BASE}/lamps/set"
        body: Any
        if kind == 0:
            body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        elif kind == 1:
            body = rng.choice([b"[]", b"1", b'"text"', b"null", b"", b"true", b"{}"])
        elif kind == 2:
            body = deep
        elif kind == 3:
            body = {"transaction": t, "values": {"group_1_arc_power": int("9" * rng.randrange(30, 400))}}
        elif kind == 4:
            literal = rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
            body = f'{{"transaction": "{t}", "values": {{"group_2_arc_power": {literal}}}}}'.encode()
        elif kind == 5:
            body = {"transaction": t, "values": {"group_1_arc_power": 1}, "pad": "x" * 70_000}
        elif kind == 6:
            body = {"transaction": rng.choice([5, [t], {"a": t}, "x" * 200, True]), "values": {"group_1_arc_power": 1}}
        elif kind == 7:
            body = {"transaction": t, rng.choice(["value", "cmd", "set", "x" * 300]): 1}
        elif kind == 8:
            body = {"transaction": t, "values": rng.choice([[], 5, "x", None, {}, {f"p{j}": 1 for j in range(40)}])}
        elif kind == 9:
            body = {"transaction": t, "values": {"group_1_arc_power": 1}, "select": {"breaker_command": "open"}}
        elif kind == 10:
            topic = f"{BASE}/{rng.choice(['ghost', 'status', 'health', 'event', 'x' * 60])}/set"
            body = {"transaction": t, "values": {"a": 1}}
        elif kind == 11:
            body = {"transaction": t, "values": {rng.choice(["nope", "ballast_1_level", "group_99_arc_power"]): 1}}
        elif kind == 12:
            value = rng.choice(["x", True, None, [1], {"a": 1}, -1, 101, 1e300, 50.5])
            body = {"transaction": t, "values": {"group_3_arc_power": value}}
        elif kind == 13:
            topic = f"{BASE}/relay/set"
            body = rng.choice(
                [
                    {"transaction": t, "select": {"current_l1": 1}},
                    {"transaction": t, "values": {"breaker_command": "open"}},
                    {"transaction": t, "values": {"breaker_command": "open"}, "token": "0" * 16},
                    {"transaction": t, "values": {"breaker_command": "open"}, "token": 12345},
                    {"transaction": t, "select": {"breaker_command": "sideways"}},
                ]
            )
        elif kind == 14:
            body = b"\xff\xfe" + f'{{"transaction": "{t}"}}'.encode()
        elif kind == 15:
            topic = f"{BASE}/request/{rng.choice(['reload!', 'delete', 'set', 'x' * 100, 'read'])}"
            body = {"transaction": t, "device": rng.choice([1, None, "lamps"]), "point": [1]}
        elif kind == 16:
            topic = f"{BASE}/request/read"
            body = {"transaction": t, "device": rng.choice(["ghost", "lamps"]), "point": rng.choice(["nope", "x"])}
        elif kind == 17:
            topic = f"{BASE}/request/{rng.choice(['read', 'health', 'devices'])}"
            body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        elif kind == 18:
            topic = f"{BASE}/request/read"
            body = b'{"transaction": "r", "device": ' + b"[" * 2000 + b"]" * 2000 + b"}"
        elif kind == 19:
            body = {"transaction": t, "values": {"group_4_arc_power": 1}, "readback": "yes"}
        elif kind == 20:
            body = b'{"transaction": "' + t.encode() + b'", "values": {"group_5_arc_power": 1}, "values": {"x": 1}}'
        elif kind == 21:
            body = {"transaction": t, "select": {"group_1_arc_power": 1}}
        elif kind == 22:
            body = {"transaction": t, "values": {"group_1_arc_power": "1" * 5000}}
        else:
            topic = f"{BASE}/request/health"
            body = {"transaction": t, "device": {"deep": [[[[[]]]]]}}
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        props = None
        if i % 7 == 0:  # some carry an MQTT 5 response topic and correlation data
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = f"{REPLIES}/{i}"
            props.CorrelationData = i.to_bytes(4, "big")
        messages.append((topic, raw, props))
        if isinstance(body, dict) and body.get("transaction") == t and len(raw) <= 65536:
            carried.add(t)
    return messages, carried


@pytest.mark.long
async def test_ten_thousand_malformed_commands_and_requests_are_each_answered_once(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    w = rig.watcher
    await w.topic(f"{BASE}/lamps/state")
    messages, carried = _fuzz_messages(random.Random(13), 10_000)
    since = len(w.seen)
    await _send_all(w, messages)
    answers = await _answers(w, since, len(messages))
    assert len(answers) == len(messages)  # exactly one each: none missing, none twice
    by_transaction = Counter(a.json().get("transaction") for a in answers)
    twice = [t for t in carried if by_transaction[t] != 1]
    assert not twice, twice[:10]
    assert all(a.json()["status"] in ("ok", "error") for a in answers)
    codes = Counter(a.json()["error"]["code"] for a in answers if a.json()["status"] == "error")
    for code in ("bad_json", "payload_too_large", "bad_type", "unknown_device", "unknown_point", "unknown_action"):
        assert codes[code] > 0, codes
    replies = [a for a in answers if a.topic.startswith(f"{REPLIES}/")]
    assert len(replies) == len([m for m in messages if m[2] is not None])
    assert not [s for s in w.seen[since:] if s.topic == f"{BASE}/request/set/result"]  # request/set is a request
    mark = len(w.seen)
    await w.wait_for(lambda s: s.topic == f"{BASE}/lamps/state", since=mark, timeout=5)  # polling goes on
    _no_tracebacks(caplog)


async def test_beyond_the_queue_commands_are_answered_busy(
    mosquitto: MosquittoBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(commands_feature, "WORKERS", 1)
    monkeypatch.setattr(commands_feature, "WAITING", 20)
    peer = _peer()
    peer.units[1].mode = "drip"  # every answer takes a while: the queue fills
    async with peer_rig(mosquitto, tmp_path, peer, DEVICES) as rig:
        w = rig.watcher
        await w.topic(f"{BASE}/status")
        messages = [
            (
                f"{BASE}/lamps/set",
                json.dumps({"transaction": f"b{i}", "values": {"group_1_arc_power": i % 100}}).encode(),
                None,
            )
            for i in range(300)
        ]
        since = len(w.seen)
        await _send_all(w, messages)
        answers = await _answers(w, since, 300, timeout=120)
        assert len(answers) == 300
        assert Counter(a.json()["transaction"] for a in answers) == {f"b{i}": 1 for i in range(300)}
        codes = Counter(a.json()["error"]["code"] for a in answers if a.json()["status"] == "error")
        assert codes["busy"] > 0
        audits = [s.json() for s in w.seen[since:] if s.topic == f"{BASE}/event" and s.json()["kind"] == "command"]
        assert Counter(a["error"]["code"] for a in audits if "error" in a)["busy"] == codes["busy"]
        # the health (every second) counts them too: a report may come between two refusals, so the one to wait
        # for is the first with every refusal counted, and none after it counts more
        await w.wait_for(
            lambda s: s.topic == f"{BASE}/health" and s.json()["dropped_inputs"].get("busy") == codes["busy"],
            since=since,
            what=f"the health counting {codes['busy']} busy refusals",
        )
        await asyncio.sleep(1.5)
        later = [s.json()["dropped_inputs"].get("busy") for s in w.seen[since:] if s.topic == f"{BASE}/health"]
        assert later[-1] == codes["busy"] and max(n or 0 for n in later) == codes["busy"], later
        _no_tracebacks(caplog)
