"""The dashboard's defences, over plain HTTP(S) against the running gateway: no command without a session, the CSRF
token and the origin checked, cookie flags, login throttling, password hashes that cannot be reversed, security
headers, TLS, and nothing listening beyond localhost by default."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.north.dashboard.users import Users, hash_password, verify_password
from gateway.north.web_settings import DashboardSettings, MetricsSettings
from hil.broker import MosquittoBroker, make_test_pki
from hil.fixtures import SiteFactory
from tests.web_harness import PASSWORD, SITE, add_user, dashboard_url, http, metrics_url, running, site_file


def _login(base: str, user: str = "ana", password: str = PASSWORD) -> tuple[int, str | None, dict[str, Any], str]:
    """Log in; the status, the session cookie's value, the answer and the Set-Cookie header."""
    status, headers, body = http(f"{base}/api/login", {"user": user, "password": password})
    cookie = headers.get("Set-Cookie", "")
    token = cookie.split(";", 1)[0].split("=", 1)[1] if cookie.startswith("cityedge_session=") else None
    return status, token, body, cookie


async def test_no_command_without_a_session_and_a_csrf_token_from_this_page(
    site_factory: SiteFactory, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    site = await site_factory(SITE)
    add_user(tmp_path / "users.json", "ana")
    async with running(site_file(site, mosquitto, tmp_path)) as gateway:
        base = dashboard_url(gateway)
        set_url = f"{base}/api/devices/lamps/set"
        write = {"values": {"ballast_0_arc_power": 30}}
        status, _, body = await asyncio.to_thread(http, set_url, write)
        assert status == 401 and body["error"]["code"] == "login_required"
        status, token, answer, cookie = await asyncio.to_thread(_login, base)
        assert status == 200 and token and answer["user"] == "ana"
        parts = [p.strip().lower() for p in cookie.split(";")]
        assert "httponly" in parts and "samesite=strict" in parts and "path=/" in parts
        assert "secure" not in parts  # plain HTTP on localhost: a Secure cookie would never come back
        session = {"Cookie": f"cityedge_session={token}"}
        # the session alone is not enough: the CSRF token must come too, and be this session's
        status, _, body = await asyncio.to_thread(http, set_url, write, session)
        assert status == 403 and body["error"]["code"] == "bad_csrf_token"
        status, _, body = await asyncio.to_thread(http, set_url, write, {**session, "X-CSRF-Token": "guess"})
        assert status == 403 and body["error"]["code"] == "bad_csrf_token"
        good = {**session, "X-CSRF-Token": answer["csrf"]}
        # another site's page (Origin), or a form post (not JSON): refused even with both
        status, _, body = await asyncio.to_thread(http, set_url, write, {**good, "Origin": "http://evil.example"})
        assert status == 403 and body["error"]["code"] == "foreign_origin"
        status, _, body = await asyncio.to_thread(
            http, set_url, b"values=1", {**good, "Content-Type": "application/x-www-form-urlencoded"}
        )
        assert status == 415 and body["error"]["code"] == "not_json"
        assert site.get_value("lamps", "ballast_0_arc_power") != 30
        status, _, body = await asyncio.to_thread(http, set_url, write, {**good, "Origin": base})
        assert status == 200 and body["status"] == "ok", body
        # a value the profile refuses is refused here too, by the same command service
        status, _, body = await asyncio.to_thread(http, set_url, {"values": {"ballast_0_arc_power": 1e400}}, good)
        assert status in (400, 409) and body["status"] == "error"
        # hostile bodies: a clear error, never a crash
        for hostile in (b"[" * 100_000, b"\xff\xfe", b"{" + b'"a":' * 10 + b"}", b"x" * 70_000, b"null"):
            status, _, body = await asyncio.to_thread(http, set_url, hostile, good)
            assert status in (400, 413) and isinstance(body, dict) and body["status"] == "error", (hostile[:20], body)
        # logged out: the session is gone
        status, _, _ = await asyncio.to_thread(http, f"{base}/api/logout", {}, good)
        assert status == 200
        status, _, body = await asyncio.to_thread(http, set_url, write, good)
        assert status == 401
        # reading stays open, with the security headers
        status, headers, page = await asyncio.to_thread(http, f"{base}/")
        assert status == 200 and "<title>CityEdge gateway</title>" in page
        assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"
        status, headers, state = await asyncio.to_thread(http, f"{base}/api/state")
        assert status == 200 and {d["id"] for d in state["devices"]} == {"lamps", "meter", "relay"}
        assert state["session"] == {"user": None} and headers["Cache-Control"] == "no-store"


async def test_logins_are_throttled_and_passwords_never_leave_as_text(
    site_factory: SiteFactory, mosquitto: MosquittoBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    site = await site_factory(SITE)
    add_user(tmp_path / "users.json", "ana")
    stored = (tmp_path / "users.json").read_text()
    assert PASSWORD not in stored and json.loads(stored)["users"]["ana"]["hash"].startswith("scrypt$16384$8$1$")
    assert (tmp_path / "users.json").stat().st_mode & 0o777 == 0o600
    async with running(site_file(site, mosquitto, tmp_path)) as gateway:
        base = dashboard_url(gateway)
        for _ in range(5):
            status, token, body, _ = await asyncio.to_thread(_login, base, "ana", "wrong password!")
            assert status == 401 and token is None and body["error"]["code"] == "bad_login"
        status, _, body, _ = await asyncio.to_thread(_login, base)  # the right one, too soon after five wrong
        assert status == 429 and body["error"]["code"] == "too_many_attempts"
        status, _, body, _ = await asyncio.to_thread(_login, base, "nobody", "whatever it is")
        assert status == 429
    assert PASSWORD not in caplog.text and "wrong password!" not in caplog.text


@settings(max_examples=5, deadline=None)  # scrypt is slow on purpose: a few examples say enough
@given(st.text(min_size=10, max_size=40))
def test_password_hashes_are_salted_and_check_only_their_password(password: str) -> None:
    first, second = hash_password(password), hash_password(password)
    assert first != second  # a salt of its own each time: equal passwords do not show
    assert password not in first and verify_password(password, first) and verify_password(password, second)
    assert not verify_password(password + "x", first)
    assert not verify_password(password, first.replace("scrypt$", "md5$"))
    assert not verify_password(password, "scrypt$garbage")


def test_the_users_cli_adds_changes_lists_and_removes(tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    add_user(users, "ana")
    add_user(users, "ana", "a new password here")  # the same name: a new password
    add_user(users, "ben.ops@city")
    loaded = Users.load(users)
    assert set(loaded.users) == {"ana", "ben.ops@city"}
    assert loaded.check("ana", "a new password here") and not loaded.check("ana", PASSWORD)
    assert not loaded.check("nobody", PASSWORD)
    import subprocess
    import sys

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "gateway", "users", *args]
        return subprocess.run(command, check=False, input=stdin, capture_output=True, text=True, timeout=60)

    listed = cli("list", "-f", str(users))
    assert listed.returncode == 0 and "ana\tadded" in listed.stdout and "scrypt" not in listed.stdout
    short = cli("add", "eve", "-f", str(users), "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "a password has 10 to 1024 characters" in short.stderr
    bad = cli("add", "../eve", "-f", str(users), "--password-stdin", stdin=PASSWORD + "\n")
    assert bad.returncode == 2 and "bad user name" in bad.stderr
    assert cli("remove", "ana", "-f", str(users)).returncode == 0
    gone = cli("remove", "ana", "-f", str(users))
    assert gone.returncode == 2 and "no user 'ana'" in gone.stderr
    config = tmp_path / "gw.yaml"  # -c: the users file the configuration names, relative to it
    config.write_text("gateway: {id: block}\ndashboard: {users: users.json}\n")
    listed = cli("list", "-c", str(config))
    assert listed.returncode == 0 and "ben.ops@city\tadded" in listed.stdout and "ana" not in listed.stdout
    config.write_text("gateway: {id: block}\n")
    missing = cli("list", "-c", str(config))
    assert missing.returncode == 2 and "has no dashboard section" in missing.stderr
    users.write_text("{not json")
    broken = cli("list", "-f", str(users))
    assert broken.returncode == 2 and "not a users file" in broken.stderr and "Traceback" not in broken.stderr


async def test_localhost_by_default_and_tls_with_secure_cookies(
    site_factory: SiteFactory, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    assert DashboardSettings().host == "127.0.0.1" and MetricsSettings().host == "127.0.0.1"
    site = await site_factory(SITE)
    add_user(tmp_path / "users.json", "ana")
    make_test_pki(tmp_path)
    tls = {"cert": str(tmp_path / "server.pem"), "key": str(tmp_path / "server.key")}
    path = site_file(site, mosquitto, tmp_path, dashboard={"port": 0, "users": str(tmp_path / "users.json"),
                                                           "tls": tls})  # fmt: skip
    async with running(path) as gateway:
        for listener in gateway.web:
            addresses = listener._runner.addresses
            assert addresses and all(a[0] == "127.0.0.1" for a in addresses), addresses
        base = dashboard_url(gateway).replace("http://", "https://")
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        jar = CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                             urllib.request.HTTPCookieProcessor(jar))  # fmt: skip
        login = json.dumps({"user": "ana", "password": PASSWORD}).encode()
        request = urllib.request.Request(f"{base}/api/login", login, {"Content-Type": "application/json"})
        with await asyncio.to_thread(opener.open, request, None, 10) as response:
            cookie = response.headers["Set-Cookie"].lower()
        assert "secure" in [p.strip() for p in cookie.split(";")] and "httponly" in cookie
        with pytest.raises(OSError):  # plain HTTP to the TLS port does not get a page
            await asyncio.to_thread(urllib.request.urlopen, dashboard_url(gateway) + "/api/state", None, 5)
        status, _, text = await asyncio.to_thread(http, metrics_url(gateway))
        assert status == 200 and "cityedge_gateway_info" in text


HOSTILE = [
    ("metrics: {port: 70000}", "metrics.port: must be less than or equal to 65535, got 70000"),
    ("metrics: {points: lamps.*}", "metrics.points: expected a list, got 'lamps.*'"),
    ("metrics: {max_points: -1}", "metrics.max_points: must be greater than or equal to 0, got -1"),
    ("dashboard: {session_idle: 10s}", "dashboard.session_idle: must be between 1m and 1d"),
    ("dashboard: {tls: {cert: a.pem}}", "dashboard.tls.key: missing required key"),
    ("dashboard: {users: [1]}", "dashboard.users:"),
    ("dashboard: {listen: 0.0.0.0}", "dashboard.listen: unknown key"),
]


@pytest.mark.parametrize(("section", "says"), HOSTILE, ids=[s for s, _ in HOSTILE])
def test_hostile_web_settings_are_refused_at_their_line(section: str, says: str, tmp_path: Path) -> None:
    from tests.test_config_hostile import HEADER, _bounded_check

    path = tmp_path / "site.yaml"
    path.write_text(HEADER + section + "\n")
    code, out = _bounded_check(path)
    line = HEADER.count("\n") + 1
    assert code == 2 and says in out and f"{path}:{line}:" in out and "Traceback" not in out, out
