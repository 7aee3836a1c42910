"""`cityedge hil run`: a scenario's site, a gateway polling it and a broker, then a verdict.

The site (emulated links only; `hardware:` links are the real thing), the timeline and
the gateway run together; everything the gateway publishes is recorded and each
expectation is checked against what was actually seen in its time window. A scenario with a
`clock` runs the gateway's automation (lighting, alarms, indicators) on simulated time, `speed`
times faster than real time, and reads every time of the scenario as simulated seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import yaml

from gateway.app import Gateway
from gateway.edge.clock import FastClock
from gateway.north.mqtt_client import connection
from hil.broker import MosquittoBroker, find_mosquitto
from hil.site.emulated import Site
from hil.site.scenario import Expectation, LoadedScenario, gateway_config


@dataclass
class Record:
    t: float  # seconds since the start
    topic: str
    payload: bytes


@dataclass
class Verdict:
    expectation: Expectation
    passed: bool
    seen: str

    def line(self) -> str:
        e = self.expectation
        window = f"between {e.between[0]:g}s and {e.between[1]:g}s"
        verdict = "PASS" if self.passed else "FAIL"
        if e.lighting is not None:
            what = f"lighting {e.lighting} at {e.value!r}" + (f" ±{e.tolerance:g}" if e.tolerance else "")
            return f"{verdict}  {what} {window} ({self.seen})"
        if e.alarm is not None:
            return f"{verdict}  alarm {e.alarm} {'active' if e.active else 'not active'} {window} ({self.seen})"
        if e.value is not None:
            what = f"{e.point} = {e.value!r}" + (f" ±{e.tolerance:g}" if e.tolerance else "")
        elif e.availability is not None:
            what = f"availability {e.availability}"
        else:
            what = f"health {e.state}"
        return f"{verdict}  {e.device} {what} {window} ({self.seen})"


@dataclass
class Report:
    scenario: str
    duration: float
    verdicts: list[Verdict] = field(default_factory=list)
    messages: int = 0

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)

    def text(self) -> str:
        lines = [
            f"scenario {self.scenario}: {len(self.verdicts)} expectations over {self.duration:g}s, "
            f"{self.messages} messages from the gateway"
        ]
        lines += [f"  {v.line()}" for v in self.verdicts]
        failed = sum(not v.passed for v in self.verdicts)
        lines.append(f"result: {len(self.verdicts) - failed} passed, {failed} failed")
        return "\n".join(lines)


class Recorder:
    def __init__(self, host: str, port: int, base: str, speed: float = 1.0) -> None:
        self.host, self.port, self.base, self.speed = host, port, base, speed
        self.records: list[Record] = []
        self.start = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(aiomqtt.MqttError):
                async with connection(aiomqtt.Client(self.host, self.port)) as client:
                    await client.subscribe(f"{self.base}/#", qos=1)
                    self.ready.set()
                    async for m in client.messages:
                        payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                        self.records.append(Record(self.elapsed, str(m.topic), payload))
            await asyncio.sleep(0.2)

    @property
    def elapsed(self) -> float:
        """Scenario seconds since the start (simulated ones when the scenario has a clock)."""
        return (time.monotonic() - self.start) * self.speed


def _timeline(records: list[Record], topic: str) -> list[tuple[float, Any]]:
    out = []
    for r in records:
        if r.topic == topic:
            try:
                out.append((r.t, json.loads(r.payload)))
            except ValueError:
                out.append((r.t, r.payload.decode(errors="replace")))
    return out


def _in_window(series: list[tuple[float, Any]], start: float, end: float) -> Iterator[tuple[float, Any]]:
    """Values that held at some moment of the window: the last one before it, and those inside it."""
    before = [item for item in series if item[0] < start]
    if before:
        yield before[-1]
    yield from (item for item in series if start <= item[0] <= end)


def check(expectation: Expectation, records: list[Record], base: str) -> Verdict:
    e = expectation
    start, end = e.between
    if e.lighting is not None:
        assert isinstance(e.value, int | float)
        series = [
            (t, p.get("level")) for t, p in _timeline(records, f"{base}/lighting/{e.lighting}") if isinstance(p, dict)
        ]
        levels = [(t, v) for t, v in _in_window(series, start, end) if isinstance(v, int | float)]
        for t, v in levels:
            if _matches(v, e.value, e.tolerance):
                return Verdict(e, True, f"at {v!r} from {max(t, start):.0f}s")
        return Verdict(e, False, "seen: " + (", ".join(f"{v!r}" for _, v in levels[-3:]) or "no level"))
    if e.alarm is not None:
        listed = [
            (t, any(isinstance(a, dict) and a.get("id") == e.alarm and a.get("active") for a in p))
            for t, p in _timeline(records, f"{base}/alarms")
            if isinstance(p, list)
        ]
        for t, active in _in_window(listed, start, end):
            if active is e.active:
                return Verdict(e, True, f"{'active' if active else 'not active'} at {max(t, start):.0f}s")
        return Verdict(e, False, "seen: " + ("active" if e.active is False else "not active" if listed else "no list"))
    if e.value is not None:
        series = [
            (t, p.get("values", {}).get(e.point))
            for t, p in _timeline(records, f"{base}/{e.device}/state")
            if isinstance(p, dict)
        ]
        candidates = [(t, v) for t, v in _in_window(series, start, end) if v is not None]
        for t, v in candidates:
            if _matches(v, e.value, e.tolerance):
                return Verdict(e, True, f"seen {v!r} at {max(t, start):.1f}s")
        shown = ", ".join(f"{v!r}" for _, v in candidates[-3:]) or "no value"
        return Verdict(e, False, f"seen: {shown}")
    if e.availability is not None:
        series = _timeline(records, f"{base}/{e.device}/availability")
        wanted: Any = e.availability
    else:
        series = [
            (t, p.get("state")) for t, p in _timeline(records, f"{base}/{e.device}/health") if isinstance(p, dict)
        ]
        wanted = e.state
    states = list(_in_window(series, start, end))
    for t, value in states:
        if value == wanted:
            return Verdict(e, True, f"{value} at {max(t, start):.1f}s")
    shown = ", ".join(dict.fromkeys(str(v) for _, v in states)) or "nothing published"
    return Verdict(e, False, f"seen: {shown}")


def _matches(seen: Any, wanted: Any, tolerance: float) -> bool:
    if isinstance(wanted, bool) or isinstance(seen, bool):
        return seen is wanted
    if isinstance(wanted, int | float) and isinstance(seen, int | float):
        return abs(seen - wanted) <= tolerance
    return bool(seen == wanted)


async def _judge_as_windows_close(
    expectations: Sequence[Expectation], recorder: Recorder, base: str, progress: Callable[[str], None] | None
) -> None:
    """Say each expectation's verdict as soon as its window is over (the report judges them all again)."""
    if progress is None:
        return
    for e in sorted(expectations, key=lambda e: e.between[1]):
        wait = (e.between[1] - recorder.elapsed) / recorder.speed
        if wait > 0:
            await asyncio.sleep(wait)
        verdict = check(e, recorder.records, base)
        progress(f"t={recorder.elapsed:5.1f}s  {'PASS' if verdict.passed else 'FAIL'}     {verdict.line()}")


async def run_scenario(
    loaded: LoadedScenario,
    broker: str | None = None,
    duration: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Site, gateway and broker together for the scenario's duration; every expectation judged.
    `progress` hears, as they happen, each timeline step and each expectation once its window is over."""
    sc = loaded.scenario
    owned: MosquittoBroker | None = None
    if broker is None:
        if find_mosquitto() is None:
            raise RuntimeError("no broker: install mosquitto (scripts/setup) or give --broker HOST:PORT")
        owned = MosquittoBroker()
        owned.start()
        host, port = owned.host, owned.port
    else:
        host, _, port_text = broker.rpartition(":")
        port = int(port_text)
    base = f"cityedge/{sc.name}"
    site = Site(loaded)
    run_for = duration or loaded.run_for
    try:
        await site.start()
        with tempfile.TemporaryDirectory(prefix="cityedge-hil-") as tmp:
            data = gateway_config(loaded, site.endpoint_addresses())
            data["mqtt"] = {"host": host, "port": port, "base_topic": base}
            data["gateway"]["health_interval"] = 2
            data["store"] = {"path": str(Path(tmp) / "outbox.db")}
            path = Path(tmp) / "gateway.yaml"
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            speed = sc.clock.speed if sc.clock is not None else 1.0
            recorder = Recorder(host, port, base, speed)
            recording = asyncio.create_task(recorder.run())
            await asyncio.wait_for(recorder.ready.wait(), 15)
            await site.start_nodes(host, port, Path(tmp) / "nodes")
            recorder.start = time.monotonic()
            clock = None if sc.clock is None else FastClock(sc.clock.start, speed, t0=recorder.start)
            gateway = Gateway(path, clock=clock)
            site._started, site.speed = recorder.start, speed  # the timeline and the expectations share one clock
            await gateway.start()
            timeline = asyncio.create_task(site.run_timeline(progress))
            judging = asyncio.create_task(_judge_as_windows_close(sc.expect, recorder, base, progress))
            try:
                await asyncio.sleep(run_for / speed)
            finally:
                timeline.cancel()
                judging.cancel()
                await gateway.stop()
                recording.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await recording
    finally:
        await site.stop()
        if owned is not None:
            owned.close()
    report = Report(sc.name, run_for, messages=len(recorder.records))
    report.verdicts = [check(e, recorder.records, base) for e in sc.expect]
    return report
