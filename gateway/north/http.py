"""Serving an aiohttp application on the address a `metrics` or `dashboard` section gives, with TLS if asked."""

from __future__ import annotations

import logging
import ssl
from typing import Any

from gateway.north.web_settings import ServerTls

log = logging.getLogger("cityedge.web")
MISSING = "the {what} needs the web extra: pip install 'cityedge[web]' ({error})"


def web_modules(what: str) -> None:
    """Say clearly, at start, when the web libraries are not installed."""
    try:
        import aiohttp  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(MISSING.format(what=what, error=exc)) from None


def server_context(tls: ServerTls | None) -> ssl.SSLContext | None:
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(tls.cert), str(tls.key))
    return context


class Listener:
    """One aiohttp application on one address; `port` is the port it really got (0 asks for a free one)."""

    def __init__(self, app: Any, host: str, port: int, tls: ServerTls | None, what: str) -> None:
        self.app, self.host, self.port, self.tls, self.what = app, host, port, tls, what
        self._runner: Any = None

    async def start(self) -> None:
        from aiohttp import web

        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=server_context(self.tls))
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        scheme = "https" if self.tls else "http"
        log.info("%s on %s://%s:%d/", self.what, scheme, self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
