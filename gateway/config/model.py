"""The gateway configuration file: one YAML file per street cabinet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field, GetCoreSchemaHandler, WithJsonSchema, field_validator, model_validator
from pydantic_core import CoreSchema

from gateway.common.types import DAY, Duration, Identifier, Seconds, Strict, Within
from gateway.edge.alarms.rules import AlarmRule
from gateway.edge.indicators.settings import IndicatorSettings
from gateway.edge.lighting.settings import LightingSettings
from gateway.north.web_settings import DashboardSettings, MetricsSettings
from gateway.south.driver import AnswerTimeout, LinkSettings, link_types, on_change

Port = Annotated[int, Field(ge=1, le=65535)]
# Topic levels a device must not take, because the gateway uses them under <base>/.
RESERVED_IDS = frozenset({"status", "health", "devices", "request", "response", "event", "set"})


class GatewayInfo(Strict):
    id: Identifier = Field(description="unique gateway id; part of the default MQTT base topic")
    site: str | None = Field(None, description="where the cabinet stands")
    description: str | None = None
    health_interval: Annotated[Duration, Seconds(1, DAY)] = Field(
        30.0, description="how often <base>/health and device health are published"
    )
    sbo_timeout: Annotated[Duration, Seconds(1, 600)] = Field(
        10.0, description="how long a select-before-operate selection stays valid"
    )


class TlsSettings(Strict):
    ca: Path | None = Field(None, description="CA bundle that signed the broker's certificate")
    cert: Path | None = Field(None, description="client certificate (for mutual TLS)")
    key: Path | None = Field(None, description="client private key")
    insecure: bool = Field(False, description="skip certificate verification (testing only)")

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert is None) != (self.key is None):
            raise ValueError("client certificate and key go together: set both cert and key, or neither")
        return self


def _protocol_version(value: object) -> object:
    """`protocol: 5` as YAML writes it unquoted (a number), and 4, MQTT 3.1.1's protocol level."""
    if isinstance(value, int) and not isinstance(value, bool):
        return {5: "5", 4: "3.1.1"}.get(value, value)
    return value


class MqttSettings(Strict):
    host: str = "127.0.0.1"
    port: Port = 1883
    base_topic: str | None = Field(None, description="defaults to cityedge/<gateway id>")
    client_id: str | None = Field(None, description="defaults to cityedge-<gateway id>")
    protocol: Annotated[
        Literal["3.1.1", "5"],
        BeforeValidator(_protocol_version),
        WithJsonSchema({"enum": ["5", 5, "3.1.1"], "description": "MQTT version: 5 (default) or 3.1.1"}),
    ] = "5"
    username: str | None = None
    password_env: str | None = Field(None, description="environment variable holding the password")
    password_file: Path | None = Field(None, description="file holding the password")
    tls: TlsSettings | None = None
    keepalive: Annotated[Duration, Seconds(1, 65535)] = Field(
        30.0, description="MQTT keep-alive (the protocol allows at most 65535 s)"
    )
    reconnect_max: Annotated[Duration, Seconds(0.5, 600)] = Field(
        2.0, description="longest wait between reconnection attempts, however long the broker has been away"
    )
    qos: Literal[0, 1] = 1
    retain_state: bool = Field(False, description="publish device state retained")
    failover: list[str] = Field(default_factory=list, description="further brokers as host:port, tried in order")
    node_prefix: str = Field("nodes", description="topic level the ESP32 nodes publish under (their `topic` setting)")
    node_grace: Annotated[Duration, Seconds(0, 3600)] = Field(
        90.0,
        description="after the gateway's connection to the broker (re)starts, how long nodes have to come back "
        "before one that went offline (its Will) is reported offline: no false alarms on broker restarts",
    )

    password: None = Field(None, description="not allowed: use password_env or password_file")

    @field_validator("password", mode="before")
    @classmethod
    def _no_inline_password(cls, value: object) -> None:
        if value is not None:
            raise ValueError("do not write the password into the configuration: use password_env or password_file")

    @model_validator(mode="after")
    def _one_secret_source(self) -> MqttSettings:
        if self.password_env and self.password_file:
            raise ValueError("set password_env or password_file, not both")
        return self

    @field_validator("base_topic", "node_prefix")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c in value for c in "+#\0") or value.endswith("/")):
            raise ValueError(f"topic {value!r} must be non-empty, without + # or a trailing /")
        return value

    @field_validator("failover")
    @classmethod
    def _host_ports(cls, value: list[str]) -> list[str]:
        for item in value:
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"failover broker {item!r} must be host:port")
        return value


class StoreSettings(Strict):
    path: Path = Field(Path("/var/lib/cityedge/outbox.db"), description="SQLite outbox file")
    max_mb: Annotated[float, Within(0.1, 1_000_000)] = Field(
        256, description="disk budget of the outbox in MB: database, write-ahead log and index together"
    )
    max_age: Annotated[Duration, Seconds(1, 10 * 365 * DAY)] | None = Field(
        None, description="drop telemetry older than this"
    )
    replay_rate: Annotated[float, Within(1, 1_000_000)] = Field(
        200.0, description="messages per second replayed after an outage"
    )
    sync: Literal["full", "normal"] = Field(
        "full", description="full: every commit survives power loss; normal: fewer flash writes, survives crashes"
    )


class HomeAssistantSettings(Strict):
    enabled: bool = False
    prefix: str = "homeassistant"


Interval = Annotated[Duration, Seconds(0.01, DAY)]


class _AnyLinkType:
    """A link of any registered protocol, told apart by its `type` (the union is rebuilt when one registers)."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        models = tuple(model for _, model in link_types().values())
        if len(models) == 1:
            return handler.generate_schema(models[0])
        union: Any = Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007 - a tuple of types
        return handler.generate_schema(union)


AnyLink = Annotated[LinkSettings, _AnyLinkType]


def _not_reserved(value: str) -> str:
    if value in RESERVED_IDS:
        raise ValueError(f"'{value}' is reserved for the gateway's own topics; choose another id")
    return value


Deadband = Annotated[float, Within(0, 1e15)]
DeadbandPct = Annotated[float, Within(0, 1e6)]


class PointReport(Strict):
    deadband: Deadband = Field(0.0, description="publish when a value moves more than this")
    deadband_pct: DeadbandPct = Field(0.0, description="... and more than this percentage of the last value")


class ReportSettings(Strict):
    """When a device's state is published (each message carries all values of the cycle)."""

    mode: Literal["change", "periodic", "change_or_silence"] = Field(
        "change_or_silence", description="change: when a value moves past its deadband; periodic: every cycle"
    )
    deadband: Deadband = 0.0
    deadband_pct: DeadbandPct = 0.0
    max_silence: Annotated[Duration, Seconds(0.1, DAY)] = Field(
        60.0, description="change_or_silence: publish at least this often"
    )
    points: dict[str, PointReport] = Field(default_factory=dict, description="per-point deadbands")


class DeviceConfig(Strict):
    id: Identifier
    profile: str
    link: str
    unit: int | None = Field(None, ge=0, le=255, description="address on links that call it a unit (Modbus)")
    address: Annotated[int, Within(0, 2**32 - 1)] | Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        None, description="address on the link, in the form its protocol uses"
    )
    poll: Interval = Field(1.0, description="poll interval")
    timeout: AnswerTimeout | None = Field(None, description="answer timeout; defaults to the link's")
    enabled: bool = True
    params: dict[str, Annotated[int, Within(-(2**31), 2**31)]] = Field(
        default_factory=dict, description="profile parameters, e.g. {line: 1}"
    )
    points: list[str] | None = Field(None, description="poll only these points (default: all)")
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-point changes to the profile (the fields its points have)"
    )
    poll_groups: dict[str, Interval] = Field(
        default_factory=dict, description="intervals of the profile's point groups"
    )
    report: ReportSettings = Field(default_factory=ReportSettings)
    alarms: bool = Field(True, description="false: without the alarms its profile ships")
    offline_after: int = Field(3, ge=1, le=100, description="consecutive failed cycles before offline")
    max_backoff: Annotated[Duration, Seconds(0.1, DAY)] = Field(
        60.0, description="longest wait between probes of an offline device"
    )

    _id = field_validator("id")(_not_reserved)


class NodeConfig(Strict):
    id: Identifier
    profile: str = "esp32-pole-sensor"
    stale_after: Annotated[Duration, Seconds(1, 7 * DAY)] = Field(
        120.0, description="mark offline when silent this long"
    )
    enabled: bool = True

    _id = field_validator("id")(_not_reserved)


class GatewayConfig(Strict):
    gateway: GatewayInfo
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    homeassistant: HomeAssistantSettings = Field(default_factory=HomeAssistantSettings)
    profile_dirs: list[Path] = Field(default_factory=list, description="extra profile directories")
    links: list[AnyLink] = Field(default_factory=list, description="links of every protocol, told apart by type")
    devices: list[DeviceConfig] = Field(default_factory=list)
    nodes: list[NodeConfig] = Field(default_factory=list)
    lighting: LightingSettings | None = Field(None, description="lighting programs run by the gateway itself")
    alarms: list[AlarmRule] = Field(default_factory=list, description="alarm rules: thresholds, states, offline")
    indicators: IndicatorSettings | None = Field(None, description="energy, burning hours and savings per lamp group")
    metrics: MetricsSettings | None = Field(None, description="a Prometheus endpoint (needs the web extra)")
    dashboard: DashboardSettings | None = Field(None, description="the local web dashboard (needs the web extra)")

    @property
    def base_topic(self) -> str:
        return self.mqtt.base_topic or f"cityedge/{self.gateway.id}"

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"cityedge-{self.gateway.id}"


def _rebuild() -> None:
    """A protocol registered or went: links of its types validate from now on (or no longer).

    Models build on first use (`defer_build`): one not built yet will see the registry as it is then.
    """
    if GatewayConfig.__pydantic_complete__:
        GatewayConfig.model_rebuild(force=True)


on_change(_rebuild)
