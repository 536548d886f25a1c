"""The ASGI application `tallykey serve` runs: management API, verification endpoints,
the demo platform API, health and docs.

`/auth/request` is dispatched before the framework (it is on every proxied request);
everything else goes through FastAPI.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from tallykey import console
from tallykey.api import leaks, management, people, verify
from tallykey.api.limits import RequestLimits
from tallykey.api.responses import install_error_handlers
from tallykey.api.verify import AuthRequestEndpoint
from tallykey.auth.verifier import Verifier
from tallykey.demo import platform
from tallykey.monitor import metrics
from tallykey.monitor.access_log import AccessLog
from tallykey.notify.worker import start_background_worker
from tallykey.runtime import Runtime

log = logging.getLogger(__name__)
AUTH_REQUEST_PATH = "/auth/request"


class Dispatcher:
    """Routes `/auth/request` straight to its endpoint; the rest to the framework."""

    def __init__(self, fast_path: ASGIApp, app: ASGIApp) -> None:
        self.fast_path = fast_path
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == AUTH_REQUEST_PATH:
            await self.fast_path(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def build_api(runtime: Runtime, verifier: Verifier) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        verifier.start()
        notifications = start_background_worker(runtime.database, runtime.clock,
                                                runtime.settings, runtime.notifier)
        try:
            yield
        finally:
            notifications.stop()
            verifier.close()
            runtime.close()

    api = FastAPI(
        title="tallykey",
        version="0.1.0",
        description="Named, expiring API tokens: management, verification, demo platform.",
        lifespan=lifespan,
    )
    api.state.runtime = runtime
    api.state.verifier = verifier
    install_error_handlers(api)
    api.include_router(management.router)
    api.include_router(people.router)
    api.include_router(verify.router)
    api.include_router(leaks.router)
    api.include_router(platform.router)
    api.include_router(console.router)
    api.mount(console.STATIC_PATH, StaticFiles(directory=console.STATIC_DIR), name="console")

    @api.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        """Prometheus text format (see `tallykey.monitor.metrics`)."""
        verifier.publish_metrics()
        return Response(metrics.exposition(runtime.database),
                        media_type=metrics.CONTENT_TYPE)

    @api.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        with runtime.database.reading() as session:
            session.connection().exec_driver_sql("SELECT 1")
        return {"status": "ok", "region": runtime.settings.region}

    return api


def create_app(runtime: Runtime | None = None) -> ASGIApp:
    """The whole service. Without arguments it reads `TALLYKEY_*` settings (uvicorn
    factory for `tallykey serve --workers N`)."""
    runtime = runtime or Runtime.build()
    runtime.ensure_schema()
    runtime.check_keys()
    verifier = Verifier(settings=runtime.settings, database=runtime.database,
                        clock=runtime.clock, background=False)
    api = build_api(runtime, verifier)
    fast_path = AuthRequestEndpoint(verifier, runtime.settings)
    app: ASGIApp = RequestLimits(Dispatcher(fast_path, api))
    if runtime.settings.log_format == "json":
        app = AccessLog(app, runtime.settings.trusted_proxy_networks)
    return app
