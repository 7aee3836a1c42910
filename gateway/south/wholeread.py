"""The half the serial meter drivers share: one request per poll reads every point at once.

An IEC 62056-21 readout, an M-Bus read and a sensor's text line each carry all of a
device's values. Such a driver plans one `WholeRead` per device, decodes every point out
of its answer with `value_of` (a `PointValueError` becomes the point's error, never a
value), reads one point by reading the whole again, and refuses writes: these devices'
points are read-only. What each protocol adds is how to get the answer (`transact`) and
where a point is in it (`value_of`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from gateway.points.types import PointValueError, Value
from gateway.profiles.expand import PointSpec
from gateway.south.driver import DeviceRefused, LinkDriver, PolledDevice, ProfileProtocol, Transact


@dataclass(frozen=True, slots=True)
class WholeRead:
    """One poll of a device: every point comes from the same answer."""

    points: tuple[PointSpec, ...]

    @property
    def point_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.points)


class WholeReadDriver(ProfileProtocol, LinkDriver):
    read_only: ClassVar[str] = "these points are read-only"  # what a write is told

    def value_of(self, answer: Any, point: PointSpec) -> Value:
        """The point's value in an answer, or a PointValueError saying why there is none."""
        raise NotImplementedError

    def plan(self, device: PolledDevice, points: Sequence[PointSpec]) -> list[WholeRead]:
        return [WholeRead(tuple(points))] if points else []

    def decode(self, device: PolledDevice, request: Any, answer: Any) -> None:
        for p in request.points:
            try:
                device.values[p.name] = self.value_of(answer, p)
                device.errors.pop(p.name, None)
            except PointValueError as exc:
                device.values.pop(p.name, None)
                device.errors[p.name] = exc.reason

    async def write(self, transact: Transact, device: PolledDevice, point: PointSpec, value: Value) -> None:
        raise DeviceRefused("read_only", self.read_only)

    async def read(self, transact: Transact, device: PolledDevice, point: PointSpec) -> Value:
        return self.value_of(await transact(WholeRead((point,))), point)
