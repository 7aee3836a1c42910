"""`cityedge demo` end to end: every device online with plausible values, commands, and faults recovered."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.mqtt_harness import Watcher
from tests.waiting import until

ROOT = Path(__file__).resolve().parent.parent
BASE = "cityedge/demo-block"


async def _shell(line: str) -> str:
    """One command line as a user would paste it from the banner; its standard output."""
    proc = await asyncio.create_subprocess_exec(
        *shlex.split(line), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    return out.decode()


def _processes_tagged(tag: str) -> list[int]:
    """Our own processes: those whose environment carries `tag` (children inherit it), however deep."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if f"CITYEDGE_TEST_RUN={tag}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
    return found


@pytest.mark.long(70)
async def test_demo_with_faults() -> None:
    tag = uuid.uuid4().hex  # tests run in parallel: only the processes this demo started count
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "demo",
        "--duration",
        "80",
        "--faults",
        "--no-table",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "CITYEDGE_TEST_RUN": tag},
    )
    assert proc.stdout is not None
    banner = ""
    while "docs" not in banner:
        banner += (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    found = re.search(r"broker\s+(\S+):(\d+)\s+user (\S+)\s+password (\S+)", banner)
    assert found, banner
    broker = SimpleNamespace(host=found.group(1), port=int(found.group(2)))
    output: list[str] = []

    async def drain() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            output.append(line.decode())

    reader = asyncio.create_task(drain())
    w = Watcher(broker, (f"{BASE}/#",), username=found.group(3), password=found.group(4))
    await w.start()
    try:
        devices = ["lamps", "feeder-meter", "feeder-relay", "river-level", "outfall-flow", "pole-1", "pole-2", "pole-3"]
        for device in devices:
            await w.wait_for(
                lambda s, d=device: s.topic == f"{BASE}/{d}/availability" and s.payload == b"online",
                timeout=30,
                what=f"{device} online",
            )
        meter = (await w.topic(f"{BASE}/feeder-meter/state")).json()["values"]
        assert 220 < meter["voltage_l1"] < 240 and 49.8 < meter["frequency"] < 50.2
        pole = (await w.topic(f"{BASE}/pole-1/state", timeout=30)).json()["values"]
        assert pole["illuminance"] == 333.3

        dim = await w.command(BASE, "lamps", {"values": {"group_1_arc_power": 30}})
        assert dim["status"] == "ok"
        await w.wait_for(
            lambda s: s.topic == f"{BASE}/lamps/state" and s.json()["values"]["ballast_1_level"] == 30,
            timeout=20,
            what="dimmed lamp",
        )
        refused = await w.command(BASE, "feeder-relay", {"values": {"breaker_command": "open"}})
        assert refused["error"]["code"] == "select_required"
        # The two steps exactly as the banner prints them, with mosquitto_rr (an MQTT 5 client not ours).
        select_line, operate_line = [line.strip() for line in banner.splitlines() if "mosquitto_rr" in line]
        since = len(w.seen)
        selected = json.loads(await _shell(select_line))
        assert selected["status"] == "ok" and len(selected["token"]) == 16
        opened = json.loads(await _shell(operate_line.replace("TOKEN", selected["token"])))
        assert opened["status"] == "ok" and opened["values"] == {"breaker_command": "open"}
        audit = await w.wait_for(
            lambda s: s.topic == f"{BASE}/feeder-relay/event" and s.json().get("selected") is not None, since=since
        )
        assert audit.json()[
            "selected"
        ] == {  # for an operator who follows the breaker; the token went to mosquitto_rr only
            "point": "breaker_command",
            "expires_ms": 10000,
            "answered_to": "replies/cityedge-demo/breaker",
        }
        assert selected["token"] not in audit.payload.decode()
        await w.wait_for(
            lambda s: s.topic == f"{BASE}/feeder-relay/state" and s.json()["values"]["breaker_open"],
            timeout=10,
            what="breaker open",
        )

        # the fault timeline: each fault detected, each recovered
        await w.wait_for(
            lambda s: s.topic == f"{BASE}/lamps/state" and s.json()["values"]["ballast_3_lamp_failure"],
            timeout=40,
            what="lamp failure",
        )
        off = await w.wait_for(
            lambda s: s.topic == f"{BASE}/feeder-meter/availability" and s.payload == b"offline",
            timeout=30,
            what="meter offline",
        )
        await w.wait_for(
            lambda s: s.topic == f"{BASE}/feeder-meter/availability" and s.payload == b"online",
            since=w.seen.index(off),
            timeout=30,
            what="meter back",
        )
        # the block's automation: its lamp groups on their night program, the alarms of both faults so far
        street = (await w.topic(f"{BASE}/lighting/street")).json()
        assert street["reason"] == "program" and street["program"] == "night" and street["level"] in (0, 50, 100)

        def listed(seen: Any) -> set[str]:
            return {a["id"] for a in seen.json()} if seen.topic == f"{BASE}/alarms" else set()

        await w.wait_for(lambda s: "lamps.lamp-failure.ballast_3_lamp_failure" in listed(s), what="the lamp alarm")
        await w.wait_for(lambda s: "meter-silent" in listed(s), since=w.seen.index(off), what="the meter alarm")
        wifi = await w.wait_for(
            lambda s: s.topic == f"{BASE}/pole-2/availability" and s.payload == b"offline",
            timeout=30,
            what="pole-2 offline",
        )
        restart = len(w.seen)
        await until(lambda: any("the broker restarts" in line for line in output), 30, "broker restart")
        await w.wait_for(
            lambda s: s.topic == f"{BASE}/status" and s.json() == {"state": "online"},
            since=restart,
            timeout=30,
            what="gateway back after the broker restart",
        )
        await w.wait_for(
            lambda s: s.topic == f"{BASE}/pole-2/availability" and s.payload == b"online",
            since=w.seen.index(wifi),
            timeout=40,
            what="pole-2 back",
        )
    finally:
        await w.stop()
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        finally:
            reader.cancel()
    assert proc.returncode == 0
    assert _processes_tagged(tag) == [], "no process of the demo (nodes, broker, emulators) may outlive it"


@pytest.mark.long
async def test_demo_without_mosquitto_uses_the_embedded_broker(monkeypatch: object) -> None:
    import io

    import hil.site.demo

    monkeypatch.setattr(hil.site.demo, "find_mosquitto", lambda: None)  # type: ignore[attr-defined]
    ready: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
    out = io.StringIO()
    demo = asyncio.create_task(hil.site.demo.run_demo(None, False, None, False, out, on_ready=ready.set_result))
    try:
        info = await asyncio.wait_for(ready, 60)
        assert "embedded amqtt broker" in out.getvalue()
        broker = SimpleNamespace(host=info["host"], port=info["port"])
        w = Watcher(broker, (f"{BASE}/#",), v5=False, username=str(info["user"]), password=str(info["password"]))
        await w.start()
        try:
            for device in ("feeder-meter", "lamps", "pole-1"):
                await w.wait_for(
                    lambda s, d=device: s.topic == f"{BASE}/{d}/availability" and s.payload == b"online",
                    timeout=40,
                    what=f"{device} online",
                )
            dim = await w.command(BASE, "lamps", {"values": {"group_1_arc_power": 40}})
            assert dim["status"] == "ok"
        finally:
            await w.stop()
        wrong = Watcher(broker, (f"{BASE}/#",), v5=False, username=str(info["user"]), password="not-the-password")
        with pytest.raises(TimeoutError):
            await wrong.start()  # authentication is on
        await wrong.stop()
    finally:
        demo.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(demo, 60)


def test_the_demo_table_survives_what_anyone_may_publish_on_its_broker() -> None:
    """The table reads the block's tree: a message nobody can use is left out, and the table still renders."""
    import contextlib

    from hil.site.demo import View

    view = View()
    hostile = [
        ("alarms", b"5"), ("alarms", b'{"id": "x"}'), ("alarms", b'[7, null, {"id": "a", "active": true}]'),
        ("lighting/street", b"[1, 2]"), ("lighting/square", b'{"level": "bright"}'),
        ("lighting/park", b'{"level": 1e999}'),
        ("event", b"{}"), ("event", b"NaN"), ("status", b"[]"), ("lamps/state", b'{"values": 3}'),
        ("lighting/" + "x" * 5000, b'{"level": 50, "reason": "override"}'), ("alarms", b"\xff\xfe"),
        ("alarms", b"[" * 100_000 + b"]" * 100_000), ("event", b"1" * 2_000_000),  # deep, huge
    ]  # fmt: skip
    for rest, payload in hostile:
        with contextlib.suppress(ValueError, KeyError, AttributeError, TypeError):  # as the demo's subscriber does
            view.take(BASE, f"{BASE}/{rest}", payload)
    table = view.table()
    assert "lighting: " in table and "square ?" in table and "x" * 64 + " 50% (override)" in table
    assert "street" not in table  # a list is no lighting state
    assert "alarms: 1 active: a (?)" in table  # the last list that could be read
