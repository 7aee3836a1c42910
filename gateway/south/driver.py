"""The southbound contract: what a protocol gives the gateway, and the registry the gateway finds it in.

A protocol has two halves. Its *profile* half (every protocol) says what its points
look like in a device profile: the fields it adds to the neutral ones, and how they
become a point's `attributes` (a Modbus table, address and codec; a node's telemetry
key). Its *link* half (polled protocols) says how to reach devices: the link settings
it accepts, a transport per link, planning a poll cycle into requests, carrying out a
request and decoding its answer into values and per-point errors, writing and reading
one point, and which of the common kinds every failure is. The core schedules,
supervises and reports; it never looks inside a request or an answer.

Failures are `TransactionError`s of four kinds the health counters know: no answer
(`Timeout`), an answer that is damaged (`CorruptAnswer`), a device that refused
(`DeviceRefused`), and a link that is gone (`ConnectionFailed`).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Protocol

from pydantic import BaseModel, Field

from gateway.common.problems import KeyPath
from gateway.common.types import Duration, Identifier, Seconds, Strict
from gateway.points.types import DataType, Value

if TYPE_CHECKING:
    from gateway.profiles.expand import PointSpec, ResolvedProfile
    from gateway.profiles.model import Profile


AnswerTimeout = Annotated[Duration, Seconds(0.001, 60)]  # how long a request may wait for its answer


class LinkSettings(Strict):
    """What every link has; each protocol's link models add their own settings (see its README)."""

    id: Identifier
    type: str
    timeout: AnswerTimeout = Field(1.0, description="answer timeout per request")


# -- failures -----------------------------------------------------------------------------------


class TransactionError(Exception):
    """Base of every classified failure. `kind` is the counter it lands in."""

    kind = "error"
    answered = False  # the device answered (it refused), rather than not at all
    corrupt = False  # an answer arrived, damaged: the next request may well work


class Timeout(TransactionError):
    kind = "timeout"


class CorruptAnswer(TransactionError):
    """Bytes that are not a good answer: a checksum error, a wrong length, another device's answer."""

    corrupt = True
    kind = "framing"


class DeviceRefused(TransactionError):
    """The device answered with a refusal (an exception code): it is there, the request was not welcome."""

    answered = True
    command_code = "device_refused"  # what a refused command's result says (each protocol may name its own)

    def __init__(self, name: str, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.name, self.code = name, code

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.name


class ConnectionFailed(TransactionError):
    """The link itself failed: refused, reset, unreachable, or a serial port that vanished."""

    kind = "connection"

    def __init__(self, message: str, reason: str = "connection_failed") -> None:
        super().__init__(message)
        self.reason = reason  # connection_refused, connection_reset, port_missing, ...

    @property
    def dropped(self) -> bool:
        """The connection was up and went during a transaction: the device in flight broke it, not the link."""
        return self.reason == "connection_reset"


class LinkWaiting(ConnectionFailed):
    """The link failed a moment ago and waits out its backoff: not tried now. `reason` is that failure's, so a
    device behind a refusing link is offline for `connection_refused`, not for a bare "link down"."""


# -- what the core handles without looking inside ---------------------------------------------


class Request(Protocol):
    """One request of a poll cycle: the points its answer carries."""

    @property
    def point_names(self) -> Sequence[str]: ...


class LinkTransport(Protocol):
    """One connection (a socket, a serial port) to the devices of one link."""

    reconnects: int  # connections made
    noise_bytes: int  # bytes that were no answer to anything, skipped

    async def close(self) -> None: ...


class PolledDevice(Protocol):
    """What a link driver sees of a device: its configuration, points, live values and its own state."""

    id: str
    resolved: ResolvedProfile
    timeout: float
    values: dict[str, Value]
    errors: dict[str, str]
    protocol_state: Any  # what the driver's prepare() made for it (a read planner, an address)

    @property
    def learned(self) -> dict[str, Any]: ...  # what the driver learned about the device, shown in its health


Transact = Callable[[Any], Awaitable[Any]]  # one request through the link's priority lane -> its answer


# -- the two halves of a protocol ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Issue:
    """A problem with one point or setting. `override` marks problems caused by a device's overrides."""

    path: KeyPath
    message: str
    override: bool = False
    key: bool = False  # about a name (point, parameter) rather than a value: point at the key


Report = Callable[[str | None, str], None]  # (field or None for the point itself, message)


class ProfileProtocol:
    """The profile half: what a protocol's points look like in profiles, and what they become."""

    name: ClassVar[str]
    source: ClassVar[str] = "polled"  # how its devices run: "polled" over links, or a source of their own
    section: ClassVar[str] = "devices"  # where the gateway configuration lists its devices
    profile_model: ClassVar[type[Profile]]  # the whole profile file for this protocol
    point_fields: ClassVar[type[BaseModel]]  # the fields a point (or `defaults`, or an override) may have
    types: ClassVar[frozenset[DataType]] = frozenset(DataType)  # the value types its points may have

    def default_type(self, fields: Mapping[str, Any]) -> DataType:
        """The type of a point that names none."""
        return DataType.UINT16

    def attributes(self, profile: Any, name: str, fields: dict[str, Any], base: int, bad: Report) -> Any:
        """The point's protocol attributes (its place, its key), or None after reporting problems with `bad`."""
        raise NotImplementedError

    def check_points(self, profile: Any, points: Sequence[PointSpec]) -> Iterable[Issue]:
        """Problems between points (overlaps, forbidden ranges, ...), after every point is built."""
        return ()

    def limits(self, profile: Any) -> Any:
        """The device limits a resolved profile keeps (what the planner and the link driver need)."""
        return getattr(profile, "limits", None)

    def summary(self, profile: Any) -> list[str]:
        """Lines `cityedge profiles show` prints under the description (limits, addressing)."""
        return []

    def columns(self, profile: Any, point: PointSpec) -> dict[str, Any]:
        """The point's protocol columns for `cityedge profiles show`, in order (`type` may be refined here)."""
        return {}


class LinkDriver:
    """The link half: reaching devices over a link of one of `link_models`' types."""

    link_models: ClassVar[tuple[type[LinkSettings], ...]]  # each with a `type: Literal[...]` field

    def transport(self, link: Any) -> LinkTransport:
        raise NotImplementedError

    def describe_link(self, link: Any) -> str:
        """One line for `cityedge check`: `modbus-rtu /dev/ttyUSB0 9600 8E1`."""
        return str(getattr(link, "type", "link"))

    def address(self, device: Any) -> tuple[Any, str | None]:
        """The device's address on its link from its configuration, or (None, why not)."""
        return getattr(device, "address", None), None

    def prepare(self, device: PolledDevice, address: Any) -> Any:
        """Per-device state (planner, address); also the place to set device.pause."""
        return address

    def plan(self, device: PolledDevice, points: Sequence[PointSpec]) -> list[Any]:
        """The fewest requests that read these points."""
        raise NotImplementedError

    async def transact(self, transport: LinkTransport, device: PolledDevice, request: Any) -> Any:
        """Carry out one request; its answer. A TransactionError of the right kind when there is none to use."""
        raise NotImplementedError

    def carry_over(self, device: PolledDevice, before: Any) -> None:
        """A device replaced by one of the same id, profile and address (its link or settings restarted):
        keep what was learned about it. `before` is the protocol state of the device it replaces."""

    def replan(self, device: PolledDevice, request: Any, error: Exception) -> list[Any] | None:
        """After `request` failed: the requests to make instead, or None to take the failure.

        Called when the device refused it (an exception answer, definite), and once per cycle after a timeout
        (a guess: the device may only be unable to answer long requests); for a guess, `settle` follows.
        """
        return None

    def settle(self, device: PolledDevice, kept: bool) -> None:
        """After a replan on a timeout: the first of the new requests was answered (kept) or not (forget the guess)."""

    def decode(self, device: PolledDevice, request: Any, answer: Any) -> None:
        """Store the values an answer carries into device.values (and per-point problems into device.errors)."""
        raise NotImplementedError

    async def write(self, transact: Transact, device: PolledDevice, point: PointSpec, value: Value) -> None:
        raise NotImplementedError

    async def read(self, transact: Transact, device: PolledDevice, point: PointSpec) -> Value:
        raise NotImplementedError

    def describe_request(self, device: Any, request: Any) -> dict[str, Any]:
        """One planned request for `cityedge plan --json`; it lists the `points` it carries."""
        return {"points": list(request.point_names)}

    def wire_time(self, link: Any, device: PolledDevice, request: Any) -> float | None:
        """Seconds one request holds the link (on a shared bus: the bus), or None where that is not known."""
        return None

    def plan_columns(self) -> tuple[str, ...]:
        """The keys of describe_request that `cityedge plan` shows as columns (before the points)."""
        return ()

    def plan_cell(self, column: str, value: Any) -> str:
        """How `cityedge plan` shows one of those columns."""
        return str(value)


# -- the registry ------------------------------------------------------------------------------------

_PROTOCOLS: dict[str, ProfileProtocol] = {}
_LINK_TYPES: dict[str, tuple[LinkDriver, type[LinkSettings]]] = {}
_ON_CHANGE: list[Callable[[], None]] = []  # models that embed the registry's link types rebuild themselves


def register(protocol: ProfileProtocol) -> None:
    """Make a protocol known: its profiles validate, and (for link drivers) its links and devices run."""
    _PROTOCOLS[protocol.name] = protocol
    if isinstance(protocol, LinkDriver):
        for model in protocol.link_models:
            _LINK_TYPES[link_type_of(model)] = (protocol, model)
    if _loaded_builtins is not _LOADING:  # the shipped ones say so once, when all are in
        _changed()


def unregister(name: str) -> None:
    protocol = _PROTOCOLS.pop(name, None)
    if isinstance(protocol, LinkDriver):
        for model in protocol.link_models:
            _LINK_TYPES.pop(link_type_of(model), None)
    _changed()


def on_change(rebuild: Callable[[], None]) -> None:
    """Call `rebuild` whenever a protocol is registered or removed."""
    _ON_CHANGE.append(rebuild)


def _changed() -> None:
    for rebuild in _ON_CHANGE:
        rebuild()


def protocols() -> Mapping[str, ProfileProtocol]:
    """By name: schemas and messages list them in the same order whatever was imported first."""
    _builtins()
    return dict(sorted(_PROTOCOLS.items()))


def protocol(name: str) -> ProfileProtocol | None:
    _builtins()
    return _PROTOCOLS.get(name)


def link_types() -> Mapping[str, tuple[LinkDriver, type[LinkSettings]]]:
    _builtins()
    return dict(sorted(_LINK_TYPES.items()))


def link_driver(link: Any) -> LinkDriver:
    """The driver of a validated link."""
    _builtins()
    return _LINK_TYPES[link.type][0]


def link_type_of(model: type[LinkSettings]) -> str:
    annotation = model.model_fields["type"].annotation
    args: tuple[object, ...] = getattr(annotation, "__args__", ())
    if len(args) != 1 or not isinstance(args[0], str):
        raise TypeError(f"{model.__name__}.type must be a Literal of one link type")
    return args[0]


# The protocols that ship with CityEdge: each module registers its protocol when imported.
# A new protocol folder adds its driver module here (tests may register their own at any time).
BUILTIN = (
    "gateway.south.modbus.driver",
    "gateway.south.nodes.profile",
    "gateway.south.iec62056.driver",
    "gateway.south.mbus.driver",
    "gateway.south.ascii.driver",
)
_LOADING = "loading"
_loaded_builtins: bool | str = False


def _builtins() -> None:
    """Import the shipped protocols on first use (so importing the contract costs nothing)."""
    global _loaded_builtins  # noqa: PLW0603 - once per process
    if _loaded_builtins is False:
        _loaded_builtins = _LOADING
        try:
            for module in BUILTIN:
                importlib.import_module(module)
        finally:
            _loaded_builtins = True
        _changed()
