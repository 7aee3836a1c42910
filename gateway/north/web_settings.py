"""The `metrics` and `dashboard` sections of a gateway configuration: where each listens, with what.

Both listen on localhost unless told otherwise; TLS is a certificate and its key. Nothing
here imports the web libraries: a gateway without the `web` extra still reads its file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from gateway.common.types import Duration, Seconds, Strict

Port = Annotated[int, Field(ge=0, le=65535, description="0: any free port (the log says which)")]


class ServerTls(Strict):
    cert: Path = Field(description="the server's certificate (PEM, with its chain)")
    key: Path = Field(description="its private key (PEM)")


class MetricsSettings(Strict):
    host: str = Field("127.0.0.1", description="the address to listen on: localhost unless you mean otherwise")
    port: Port = 9464
    points: list[Annotated[str, Field(min_length=1, max_length=130)]] = Field(
        default_factory=lambda: ["*"],
        max_length=1000,
        description="which point values become series, as device.point patterns (lamps.*, *.voltage_l1); [] none",
    )
    max_points: Annotated[int, Field(ge=0, le=1_000_000)] = Field(
        20000, description="at most this many point series; the rest are counted, not exported"
    )
    tls: ServerTls | None = None


class DashboardSettings(Strict):
    host: str = Field("127.0.0.1", description="the address to listen on: localhost unless you mean otherwise")
    port: Port = 8080
    users: Path = Field(
        Path("dashboard-users.json"),
        description="users and password hashes, managed with `cityedge users` (relative to this file)",
    )
    tls: ServerTls | None = None
    secure_cookies: bool | None = Field(
        None, description="mark the session cookie Secure (default: when TLS is on; behind a TLS proxy say true)"
    )
    session_idle: Annotated[Duration, Seconds(60, 86400)] = Field(1800.0, description="a session ends when idle")
    session_max: Annotated[Duration, Seconds(300, 7 * 86400)] = Field(
        8 * 3600.0, description="a session ends this long after login, busy or not"
    )
    events: Annotated[int, Field(ge=10, le=1000)] = Field(50, description="recent events shown")
