"""`/metrics` on the `metrics` section's address: the Prometheus text format (or OpenMetrics when asked)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from gateway.core.state import StateStore
from gateway.north.http import Listener
from gateway.north.metrics.collector import GatewayCollector
from gateway.north.web_settings import MetricsSettings


class MetricsServer(Listener):
    def __init__(self, settings: MetricsSettings, store: StateStore, gateway_id: str) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(GatewayCollector(store, gateway_id, settings))
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/", self.index)
        super().__init__(app, settings.host, settings.port, settings.tls, "metrics")

    async def metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(text="CityEdge gateway metrics: /metrics\n")
