"""The dashboard: one page, live through server-sent events, served by aiohttp on the `dashboard` address.

aiohttp because the gateway is asyncio already: the dashboard runs in the gateway's own
loop and reads the live state store directly (no copy, no second process), it streams
server-sent events without extra parts, serves TLS from a certificate, and it is a
long-kept, widely packaged library (Debian ships it) with no build step for the page.

Reading is open to anyone who can reach the address (localhost unless configured).
Changing anything (a point, a lamp group's override, an alarm's acknowledgement, a
breaker by select-before-operate) needs a logged-in user, and every such request must
carry the session's CSRF token in `X-CSRF-Token`, be JSON, and, when the browser says
where it comes from (`Origin`), come from this page. Commands go through the command
service as every other command does: checked against the profile, audited with
`{"via": "dashboard", "user": ...}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.core.commands import Command, CommandError
from gateway.core.events import DeviceUpdate, HealthChanged, Notable
from gateway.core.inputs import InputError, parse_json
from gateway.core.state import StateStore
from gateway.north.dashboard.users import UserError, Users
from gateway.north.extensions.base import Context
from gateway.north.http import Listener
from gateway.north.web_settings import DashboardSettings

log = logging.getLogger("cityedge.dashboard")
STATIC = Path(__file__).parent / "static"
COOKIE = "cityedge_session"
MAX_BODY = 64 * 1024
MAX_STREAMS = 32
LOGIN_FAILURES = 5  # per address and minute, then refused for the rest of it
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


@dataclass
class Session:
    user: str
    csrf: str
    started: float
    seen: float


@dataclass(eq=False)
class Stream:
    """One open page: the device whose points it shows, what changed since its last update, what it was sent."""

    watch: str | None = None
    devices: set[str] = field(default_factory=set)
    events: list[dict[str, Any]] = field(default_factory=list)
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)  # the summary each device had when last sent
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Dashboard(Listener):
    def __init__(self, settings: DashboardSettings, ctx: Context, store: StateStore) -> None:
        self.settings, self.ctx, self.store = settings, ctx, store
        self.sessions: dict[str, Session] = {}
        self.failures: dict[str, deque[float]] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=settings.events)
        self.streams: set[Stream] = set()
        self._health: dict[str, Any] | None = None
        self._health_at = 0.0
        self._summaries: dict[str, dict[str, Any]] = {}
        self._undo: list[Any] = []
        app = web.Application(client_max_size=MAX_BODY)
        app.on_response_prepare.append(self._headers)
        r = app.router
        r.add_get("/", self.index)
        r.add_static("/static", STATIC, show_index=False)
        r.add_get("/api/state", self.state)
        r.add_get("/api/stream", self.stream)
        r.add_get("/api/session", self.session_info)
        r.add_post("/api/login", self.login)
        r.add_post("/api/logout", self.logout)
        r.add_post("/api/devices/{device}/set", self.set_point)
        r.add_post("/api/devices/{device}/select", self.select)
        r.add_post("/api/devices/{device}/operate", self.operate)
        r.add_post("/api/alarms/{alarm}/ack", self.acknowledge)
        r.add_post("/api/lighting/{target}/override", self.override)
        super().__init__(app, settings.host, settings.port, settings.tls, "dashboard")

    async def start(self) -> None:
        bus = self.ctx.bus
        self._undo += [
            bus.subscribe(DeviceUpdate, self._on_update),
            bus.subscribe(HealthChanged, self._on_health),
            bus.subscribe(Notable, self._on_event),
        ]
        await super().start()

    async def stop(self) -> None:
        for undo in self._undo:
            undo()
        self._undo.clear()
        for stream in list(self.streams):
            stream.wake.set()
        await super().stop()

    # -- what the page shows ---------------------------------------------------------------------------

    def _fresh(self) -> dict[str, Any]:
        """The gateway health, computed at most twice a second however many pages are open; a new one also
        empties the summaries kept since the last (every open page shares both)."""
        now = time.monotonic()
        if self._health is None or now - self._health_at > 0.5:
            self._health, self._health_at = self.store.gateway_health(), now
            self._summaries.clear()
        return self._health

    def summary(self, device_id: str) -> dict[str, Any] | None:
        """What the device list shows: state and why, and a node's signal and battery (no points: cheap for 200)."""
        kept = self._summaries.get(device_id)
        if kept is not None:
            return kept
        device = self.store.get(device_id)
        if device is None:
            return None
        health = device.health.to_json()
        out: dict[str, Any] = {
            "id": device.id, "source": device.source, "profile": device.resolved.profile.name,
            "state": device.health.state_name if device.health.known else "starting",
            "reason": health.get("reason"), "since": health.get("since"),
        }  # fmt: skip
        report = health.get("node")
        if isinstance(report, dict) and "rssi" in report:
            out["rssi"] = report["rssi"]
        battery = device.values.get("battery")
        if battery is not None:
            out["battery"] = battery
        self._summaries[device_id] = out
        return out

    def detail(self, device_id: str) -> dict[str, Any] | None:
        """One device in full: its points with values or errors, what can be written, its health and address."""
        device, summary = self.store.get(device_id), self.summary(device_id)
        if device is None or summary is None:
            return None
        points = []
        for p in device.resolved.points:
            points.append({
                "name": p.name, "unit": p.unit, "value": device.values.get(p.name), "error": device.errors.get(p.name),
                "writable": p.access.writable, "sbo": p.sbo, "enum": list(p.enum.values()) if p.enum else None,
                "min": p.min, "max": p.max,
            })  # fmt: skip
        return {**summary, "health": device.health.to_json(), "where": device.describe(), "points": points}

    def snapshot(self, watch: str | None = None) -> dict[str, Any]:
        health = self.store.gateway_health()
        config = self.ctx.loaded.config
        gateway = {k: health.get(k) for k in ("ts", "version", "uptime_s", "memory_mb", "cpu_s", "devices", "links",
                                               "outbox", "mqtt", "nodes")}  # fmt: skip
        gateway["id"] = config.gateway.id
        gateway["base"] = config.base_topic
        devices = [d for d in (self.summary(x.id) for x in self.store.devices()) if d is not None]
        return {"gateway": gateway, "devices": devices, "detail": self.detail(watch) if watch else None,
                "alarms": health.get("alarms", []), "lighting": health.get("lighting", {}),
                "indicators": health.get("indicators"), "events": list(self.events)}  # fmt: skip

    def _on_update(self, update: DeviceUpdate) -> None:
        self._changed(update.device)

    def _on_health(self, event: HealthChanged) -> None:
        self._changed(event.device)

    def _changed(self, device: str) -> None:
        for stream in self.streams:
            stream.devices.add(device)
            stream.wake.set()

    def _on_event(self, event: Notable) -> None:
        body = {"ts": int(time.time() * 1000), "kind": event.kind, **event.to_json()}
        self.events.appendleft(body)
        for stream in self.streams:
            if len(stream.events) < 200:
                stream.events.append(body)
            stream.wake.set()

    # -- pages and reading ----------------------------------------------------------------------------

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(HEADERS)
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def state(self, request: web.Request) -> web.Response:
        body = self.snapshot()
        body["session"] = self._session_json(request)
        return _json(body)

    async def session_info(self, request: web.Request) -> web.Response:
        return _json(self._session_json(request))

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the state once (`?device=ID`: with that device's points), then at most one update a
        second with what changed: device summaries that differ from what this page was sent, the watched device's
        points, alarms, lighting, new events."""
        if len(self.streams) >= MAX_STREAMS:
            return _error(503, "busy", f"at most {MAX_STREAMS} open dashboards")
        watch = request.query.get("device")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await response.prepare(request)
        stream = Stream(watch=watch if watch and self.store.get(watch) else None)
        self.streams.add(stream)
        try:
            first = self.snapshot(stream.watch)
            stream.sent = {d["id"]: d for d in first["devices"]}
            await response.write(_sse("state", first))
            while self._runner is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stream.wake.wait(), 15)
                stream.wake.clear()
                if self._runner is None:
                    break
                await response.write(_sse("update", self._update(stream)))
                await asyncio.sleep(1.0)  # at most one update a second, however busy the site
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.streams.discard(stream)
        return response

    def _update(self, stream: Stream) -> dict[str, Any]:
        changed, stream.devices = stream.devices, set()
        events, stream.events = stream.events, []
        self._fresh()
        devices = []
        for device_id in sorted(changed):
            summary = self.summary(device_id)
            if summary is not None and summary != stream.sent.get(device_id):
                stream.sent[device_id] = summary
                devices.append(summary)
        health = self._fresh()
        return {
            "gateway": {k: health.get(k) for k in ("ts", "uptime_s", "devices", "links", "outbox", "mqtt")},
            "devices": devices,
            "detail": self.detail(stream.watch) if stream.watch in changed else None,
            "alarms": health.get("alarms", []), "lighting": health.get("lighting", {}), "events": events,
        }  # fmt: skip

    # -- logging in --------------------------------------------------------------------------------------

    def _session(self, request: web.Request) -> Session | None:
        token = request.cookies.get(COOKIE)
        session = self.sessions.get(token) if token else None
        if session is None or token is None:
            return None
        now = time.monotonic()
        if now - session.seen > self.settings.session_idle or now - session.started > self.settings.session_max:
            del self.sessions[token]
            return None
        session.seen = now
        return session

    def _session_json(self, request: web.Request) -> dict[str, Any]:
        session = self._session(request)
        return {"user": session.user, "csrf": session.csrf} if session else {"user": None}

    async def login(self, request: web.Request) -> web.Response:
        refused = _foreign(request)
        if refused is not None:
            return refused
        address = request.remote or "?"
        now = time.monotonic()
        recent = self.failures.setdefault(address, deque(maxlen=LOGIN_FAILURES))
        if len(recent) == LOGIN_FAILURES and now - recent[0] < 60:
            return _error(429, "too_many_attempts", "too many failed logins from this address: wait a minute")
        data = await _body(request)
        if isinstance(data, web.Response):
            return data
        user, password = data.get("user"), data.get("password")
        if not isinstance(user, str) or not isinstance(password, str):
            return _error(400, "bad_json", "give 'user' and 'password'")
        try:
            users = Users.load(self.settings.users)
        except UserError as exc:
            log.error("dashboard users: %s", exc)
            return _error(503, "no_users", "the users file cannot be read: see the gateway's log")
        if not await asyncio.to_thread(users.check, user[:64], password):
            recent.append(now)
            log.warning("dashboard: failed login for %r from %s", user[:64], address)
            return _error(401, "bad_login", "wrong user or password")
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self.sessions[token] = Session(user, csrf, now, now)
        log.info("dashboard: %s logged in from %s", user, address)
        response = _json({"user": user, "csrf": csrf})
        secure = self.settings.secure_cookies if self.settings.secure_cookies is not None else self.tls is not None
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="Strict",
            secure=secure,
            path="/",
            max_age=int(self.settings.session_max),
        )
        return response

    async def logout(self, request: web.Request) -> web.Response:
        session = await self._authorised(request)
        if isinstance(session, web.Response):
            return session
        token = request.cookies.get(COOKIE)
        self.sessions.pop(token or "", None)
        response = _json({"user": None})
        response.del_cookie(COOKIE, path="/")
        return response

    async def _authorised(self, request: web.Request) -> Session | web.Response:
        refused = _foreign(request)
        if refused is not None:
            return refused
        session = self._session(request)
        if session is None:
            return _error(401, "login_required", "log in to change anything")
        if not hmac.compare_digest(request.headers.get("X-CSRF-Token", ""), session.csrf):
            return _error(403, "bad_csrf_token", "the request does not carry this session's token")
        return session

    async def _authorised_body(self, request: web.Request) -> tuple[Session, dict[str, Any]] | web.Response:
        """The session and the JSON body of a request that changes something, or the refusal to answer with."""
        session = await self._authorised(request)
        if isinstance(session, web.Response):
            return session
        data = await _body(request)
        return data if isinstance(data, web.Response) else (session, data)

    # -- commands ----------------------------------------------------------------------------------------

    async def _command(self, request: web.Request, **fields: Any) -> web.Response:
        asked = await self._authorised_body(request)
        if isinstance(asked, web.Response):
            return asked
        session, data = asked
        device = request.match_info["device"]
        if "select" in fields:
            fields["select"] = data
        else:
            fields["values"] = data.get("values")
            fields["token"] = data.get("token")
        command = Command(
            device,
            f"dashboard-{uuid.uuid4().hex[:12]}",
            requester=f"dashboard:{session.user}",
            sender={"via": "dashboard", "user": session.user},
            **fields,
        )
        body = await self.ctx.commands.execute(command)
        return _json(body, 200 if body.get("status") == "ok" else 409)

    async def set_point(self, request: web.Request) -> web.Response:
        return await self._command(request)

    async def select(self, request: web.Request) -> web.Response:
        return await self._command(request, select=True)

    async def operate(self, request: web.Request) -> web.Response:
        return await self._command(request)

    async def _action(self, request: web.Request, action: str, data: dict[str, Any]) -> web.Response:
        handler = self.ctx.actions.get(action)
        if handler is None:
            return _error(404, "not_configured", f"this gateway has no {action} (see its configuration)")
        try:
            result = await handler(data)
        except CommandError as exc:
            return _json({"status": "error", "error": exc.to_json()}, 409)
        return _json({"status": "ok", "data": result})

    async def acknowledge(self, request: web.Request) -> web.Response:
        session = await self._authorised(request)
        if isinstance(session, web.Response):
            return session
        return await self._action(request, "ack", {"alarm": request.match_info["alarm"], "by": session.user})

    async def override(self, request: web.Request) -> web.Response:
        asked = await self._authorised_body(request)
        if isinstance(asked, web.Response):
            return asked
        session, data = asked
        wanted: dict[str, Any] = {k: data[k] for k in ("level", "duration", "until", "clear") if k in data}
        return await self._action(
            request, "override", {**wanted, "target": request.match_info["target"], "by": session.user}
        )


def _foreign(request: web.Request) -> web.Response | None:
    """A state-changing request from another site's page (the browser says so in Origin), or not JSON."""
    origin = request.headers.get("Origin")
    if origin is not None and origin.split("://", 1)[-1] != request.host:
        return _error(403, "foreign_origin", "requests from other sites' pages are refused")
    if request.content_type != "application/json":
        return _error(415, "not_json", "send JSON (Content-Type: application/json)")
    return None


async def _body(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        data = parse_json(await request.read(), max_bytes=MAX_BODY)
    except InputError as exc:
        return _error(400, "bad_json", str(exc))
    except web.HTTPRequestEntityTooLarge:
        return _error(413, "payload_too_large", f"at most {MAX_BODY} bytes")
    if not isinstance(data, dict):
        return _error(400, "bad_json", "the body must be a JSON object")
    return data


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body, default=str), status=status, content_type="application/json")


def _error(status: int, code: str, message: str) -> web.Response:
    return _json({"status": "error", "error": {"code": code, "message": message}}, status)


def _sse(kind: str, data: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n".encode()
