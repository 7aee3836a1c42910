"""The southbound seam is real: a protocol written inside this test runs a device through the whole gateway.

"Toy" is a line protocol over TCP, defined here and nowhere else: its link model, its
point attributes, its transport and its driver. Registered, it gets what every
protocol gets without any change to gateway/core/: the scheduler polls it, the state
store keeps its values, the command service validates and audits its commands, and the
CityEdge topic tree publishes it on a real mosquitto.

    READ <device> <register> ...       ->  OK <value> ...   |  ERR <why>
    WRITE <device> <register> <value>  ->  OK               |  ERR <why>
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from pydantic import Field

from gateway.app import Gateway
from gateway.points.types import DataType, PointValueError, Value
from gateway.profiles.expand import PointSpec
from gateway.profiles.model import PointFields, Profile, profile_model
from gateway.south import driver as south
from hil.broker import MosquittoBroker
from tests.mqtt_harness import Watcher, plain_config, start_gateway

BASE = "cityedge/hard"

# -- the protocol, as a newcomer would write it in gateway/south/toy/ ---------------------------------


class ToyLink(south.LinkSettings):
    type: Literal["toy-tcp"]
    host: str
    port: int = Field(ge=1, le=65535)


class ToyPoint(PointFields):
    tag: str | None = Field(None, description="the value's tag on the device")


@dataclass(frozen=True, slots=True)
class ToyRegister:
    register: str

    def check_write(self, value: Value) -> None:
        if isinstance(value, float) and value != round(value, 1):
            raise PointValueError(f"a toy register holds one decimal, not {value}")


@dataclass(frozen=True, slots=True)
class ToyRead:
    points: tuple[PointSpec, ...]

    @property
    def point_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.points)


class ToyTransport:
    def __init__(self, link: ToyLink) -> None:
        self.link = link
        self.reconnects = 0
        self.noise_bytes = 0
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def ask(self, line: str, timeout: float) -> str:
        if self._streams is None:
            try:
                self._streams = await asyncio.open_connection(self.link.host, self.link.port)
            except OSError as exc:
                raise south.ConnectionFailed(str(exc), "connection_refused") from None
            self.reconnects += 1
        reader, writer = self._streams
        try:
            writer.write(line.encode() + b"\n")
            answer = await asyncio.wait_for(reader.readline(), timeout)
        except TimeoutError:
            raise south.Timeout(f"no answer to {line!r} within {timeout}s") from None
        except OSError as exc:
            await self.close()
            raise south.ConnectionFailed(str(exc), "connection_reset") from None
        if not answer:
            await self.close()
            raise south.ConnectionFailed("the device closed the connection", "connection_reset")
        return answer.decode().strip()

    async def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


class ToyDriver(south.ProfileProtocol, south.LinkDriver):
    name: ClassVar[str] = "toy"
    profile_model = profile_model("toy", ToyPoint, ToyPoint)
    point_fields = ToyPoint
    link_models = (ToyLink,)
    types = frozenset({DataType.FLOAT64, DataType.INT32, DataType.BOOL})

    def default_type(self, fields: Mapping[str, Any]) -> DataType:
        return DataType.FLOAT64

    def attributes(self, profile: Profile, name: str, fields: dict[str, Any], base: int, bad: south.Report) -> Any:
        return ToyRegister(fields.get("tag") or name)

    def transport(self, link: Any) -> ToyTransport:
        return ToyTransport(link)

    def describe_link(self, link: Any) -> str:
        return f"toy {link.host}:{link.port}"

    def address(self, device: Any) -> tuple[Any, str | None]:
        if not isinstance(device.address, str):
            return None, "missing required key 'address' (the toy device's name)"
        return device.address, None

    def plan(self, device: south.PolledDevice, points: Sequence[PointSpec]) -> list[ToyRead]:
        return [ToyRead(tuple(points))] if points else []

    async def transact(self, transport: Any, device: south.PolledDevice, request: Any) -> list[str]:
        if isinstance(request, ToyRead):
            line = "READ " + " ".join([device.protocol_state, *(p.attributes.register for p in request.points)])
        else:
            line = f"WRITE {device.protocol_state} {request[0]} {request[1]}"
        answer = await transport.ask(line, device.timeout)
        word, *rest = answer.split()
        if word == "ERR":
            raise south.DeviceRefused("toy_error", f"the device refused {line!r}: {' '.join(rest)}")
        if word != "OK":
            raise south.CorruptAnswer(f"not a toy answer: {answer!r}")
        return rest

    def decode(self, device: south.PolledDevice, request: Any, answer: Any) -> None:
        for p, text in zip(request.points, answer, strict=False):
            try:
                value: Value = float(text) if p.dtype is DataType.FLOAT64 else int(text)
            except ValueError:
                device.values.pop(p.name, None)
                device.errors[p.name] = f"bad value {text!r}"
                continue
            device.values[p.name] = value
            device.errors.pop(p.name, None)

    async def write(self, transact: south.Transact, device: south.PolledDevice, point: PointSpec, value: Value) -> None:
        await transact((point.attributes.register, value))

    async def read(self, transact: south.Transact, device: south.PolledDevice, point: PointSpec) -> Value:
        (text,) = await transact(ToyRead((point,)))
        return float(text)


# -- a toy device on a loopback port ---------------------------------------------------------------


class ToyThermostat:
    def __init__(self) -> None:
        self.registers = {"t": "21.5", "sp": "20.0", "h": "48"}
        self.writes: list[tuple[str, str]] = []
        self.server: asyncio.Server | None = None
        self.clients: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for client in self.clients:
            client.close()  # the device is unplugged: its connections go too

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients.add(writer)
        with contextlib.suppress(OSError):
            while line := await reader.readline():
                verb, name, *args = line.decode().split()
                if name != "T1":
                    answer = "ERR no such device"
                elif verb == "READ":
                    answer = "OK " + " ".join(self.registers.get(r, "?") for r in args)
                elif verb == "WRITE" and args[0] in self.registers:
                    self.registers[args[0]] = args[1]
                    self.writes.append((args[0], args[1]))
                    answer = "OK"
                else:
                    answer = "ERR bad request"
                writer.write(answer.encode() + b"\n")
        self.clients.discard(writer)
        writer.close()


@pytest.fixture
def toy() -> Iterator[ToyDriver]:
    driver = ToyDriver()
    south.register(driver)
    try:
        yield driver
    finally:
        south.unregister(driver.name)


@pytest.fixture
async def thermostat() -> AsyncIterator[ToyThermostat]:
    device = ToyThermostat()
    await device.start()
    try:
        yield device
    finally:
        await device.stop()


PROFILE = """\
name: toy-thermostat
manufacturer: Toy
model: T
description: a thermostat speaking the toy line protocol
source: this test
protocol: toy
points:
  temperature: {tag: t, unit: °C, device_class: temperature}
  setpoint: {tag: sp, access: rw, min: 5, max: 30, unit: °C}
  humidity: {tag: h, type: int32, unit: "%"}
"""


async def test_a_protocol_defined_in_a_test_runs_through_the_whole_gateway(
    toy: ToyDriver, thermostat: ToyThermostat, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "toy-thermostat.yaml").write_text(PROFILE)
    path = plain_config(
        tmp_path / "gw.yaml",
        mosquitto,
        profile_dirs=[str(profiles)],
        links=[{"id": "bench", "type": "toy-tcp", "host": "127.0.0.1", "port": thermostat.port, "timeout": 0.5}],
        devices=[{"id": "thermo", "profile": "toy-thermostat", "link": "bench", "address": "T1", "poll": 0.2}],
    )
    w = Watcher(mosquitto)
    await w.start()
    gateway: Gateway = await start_gateway(path)
    try:
        # polled by the core's scheduler, published by the topic tree
        state = await w.wait_for(lambda s: s.topic == f"{BASE}/thermo/state", what="thermo state")
        assert state.json()["values"] == {"temperature": 21.5, "setpoint": 20.0, "humidity": 48}
        reading = gateway.store.reading("thermo", "setpoint")
        assert reading is not None and reading.value == 20.0 and reading.error is None
        devices = (await w.request(BASE, "devices"))["data"]
        (listed,) = [d for d in devices if d["id"] == "thermo"]
        assert listed["profile"] == "toy-thermostat" and listed["address"] == "T1"

        # commands: validated against the profile by the command service, carried by the toy driver, audited
        ok = await w.command(BASE, "thermo", {"values": {"setpoint": 22.5}})
        assert ok["status"] == "ok", ok
        assert thermostat.writes == [("sp", "22.5")]
        too_hot = await w.command(BASE, "thermo", {"values": {"setpoint": 45}})
        assert too_hot["error"]["code"] == "out_of_range" and thermostat.writes == [("sp", "22.5")]
        too_fine = await w.command(BASE, "thermo", {"values": {"setpoint": 22.25}})
        assert too_fine["error"]["code"] == "out_of_range" and "one decimal" in too_fine["error"]["message"]
        read_only = await w.command(BASE, "thermo", {"values": {"temperature": 19}})
        assert read_only["error"]["code"] == "read_only"
        audit = await w.wait_for(
            lambda s: s.topic == f"{BASE}/event" and s.json().get("kind") == "command" and s.json()["status"] == "ok",
            what="the audit record",
        )
        assert audit.json()["device"] == "thermo" and audit.json()["values"] == {"setpoint": 22.5}
        answer = await w.request(BASE, "read", {"device": "thermo", "point": "setpoint"})
        assert answer["status"] == "ok" and answer["data"]["value"] == 22.5

        # health: the core's state machine, on the toy driver's failure kinds
        thermostat.registers["h"] = "wet"
        await w.wait_for(
            lambda s: s.topic == f"{BASE}/thermo/state" and s.json().get("errors") == {"humidity": "bad value 'wet'"},
            what="a per-point error",
        )
        since = len(w.seen)
        await thermostat.stop()
        offline = await w.wait_for(
            lambda s: s.topic == f"{BASE}/event" and s.json().get("kind") == "device_offline",
            since=since,
            timeout=20,
            what="device_offline",
        )
        assert offline.json()["device"] == "thermo"
        assert offline.json()["reason"] == "connection_refused"  # the port refuses: the link's reason, kept
    finally:
        await gateway.stop()
        await w.stop()


def test_a_registered_protocol_gets_located_configuration_errors(toy: ToyDriver, tmp_path: Path) -> None:
    from gateway.common.problems import ConfigError
    from gateway.config.loader import load_config

    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "toy-thermostat.yaml").write_text(PROFILE)
    path = tmp_path / "gw.yaml"
    path.write_text(
        "gateway: {id: hard}\n"
        f"profile_dirs: [{profiles}]\n"
        "links:\n"
        "  - {id: bench, type: toy-tcp, host: 127.0.0.1, port: 9}\n"
        "devices:\n"
        "  - {id: a, profile: toy-thermostat, link: bench}\n"
        "  - {id: b, profile: eastron-sdm630, link: bench, address: T2}\n"
        "  - {id: c, profile: toy-thermostat, link: bench, address: T3, overrides: {setpoint: {tag: 7}}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    shown = str(caught.value)
    assert f"{path}:6:5: devices[0]: missing required key 'address' (the toy device's name)" in shown
    wrong = "devices[1].profile: profile 'eastron-sdm630' describes a modbus device, but link 'bench' speaks toy"
    assert wrong in shown
    assert f"{path}:8:92: devices[2].overrides.setpoint.tag: must be a valid string, got 7" in shown
