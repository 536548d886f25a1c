"""The ASGI application `tallykey serve` runs: management API, verification endpoints,
health and docs; `tallykey demo` adds the demo platform API (`create_demo_app`).

`/auth/request` is dispatched before the request-size layer and the framework (it is on
every proxied request and reads no body); everything else goes through both.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from importlib.metadata import version as package_version
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from tallykey import console
from tallykey.accounts.scopes import ScopeCatalog
from tallykey.api import (
    account,
    analytics,
    audit,
    docs,
    identities,
    leaks,
    operator,
    people,
    plans,
    session,
    tokens,
    users,
    verify,
    webhooks,
    workspaces,
)
from tallykey.api.access_log import AccessLog
from tallykey.api.responses import install_error_handlers
from tallykey.api.verify import AuthRequestEndpoint
from tallykey.asgi import direct
from tallykey.auth.caller import header_credential
from tallykey.auth.verifier import Verifier
from tallykey.demo import platform
from tallykey.errors import MetricsCredentialRequired
from tallykey.jobs import start_background_worker
from tallykey.monitor import metrics
from tallykey.network.client_ip import served_over_https
from tallykey.runtime import Runtime
from tallykey.web.bounds import RequestBounds

log = logging.getLogger(__name__)
AUTH_REQUEST_PATH = "/auth/request"
AUTH_REQUEST_PREFIX = AUTH_REQUEST_PATH + "/"


class Dispatcher:
    """Routes `/auth/request` (and `/auth/request/<path>`, as Envoy's `ext_authz` asks)
    straight to its endpoint (any method, as proxies send it);
    the rest to the request-size layer and the framework."""

    def __init__(self, fast_path: ASGIApp, app: ASGIApp) -> None:
        self.fast_path = fast_path
        self.app = app
        self._fast_path, self._app = direct(fast_path), direct(app)

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # hands back the chosen app's awaitable: no coroutine frame of its own (it is
        # never the server's app, so no server needs to tell it is ASGI 3 by its type)
        if scope["type"] == "http" and (scope["path"] == AUTH_REQUEST_PATH or scope[
                "path"].startswith(AUTH_REQUEST_PREFIX)):  # Envoy appends the request path
            return self._fast_path(scope, receive, send)
        return self._app(scope, receive, send)


def build_api(runtime: Runtime, verifier: Verifier, *, demo: bool = False) -> FastAPI:
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
        version=package_version("tallykey"),
        description="Named, expiring API tokens: management, verification, demo platform.",
        lifespan=lifespan,
        docs_url=None,  # served below from the package's own Swagger UI files (no CDN)
        redoc_url=None,
        openapi_tags=[{"name": "operator", "description": (
            "For the platform that runs tallykey: provision tenants (accounts), their "
            "first users and their workspaces from your own back office. Authenticate "
            "with an operator token (`tallykey operator-tokens create --name N --days D`), "
            "never an account's token. Every change is audited in the account it touches, "
            "naming the operator token.")}],
    )
    api.state.runtime = runtime
    api.state.verifier = verifier
    install_error_handlers(api)
    api.include_router(tokens.router)
    api.include_router(audit.router)
    api.include_router(users.router)
    api.include_router(workspaces.router)
    api.include_router(account.router)
    api.include_router(session.router)
    api.include_router(people.router)
    api.include_router(verify.router)
    api.include_router(leaks.router)
    api.include_router(operator.router)
    api.include_router(webhooks.router)
    api.include_router(identities.router)
    api.include_router(plans.router)
    api.include_router(analytics.router)
    api.state.demo = demo
    if demo:  # the demo platform API exists only under `tallykey demo` (SPEC §14)
        api.include_router(platform.router)
    api.include_router(console.router)
    api.mount(console.STATIC_PATH, StaticFiles(directory=console.STATIC_DIR), name="console")
    docs.install(api)
    framework_openapi = api.openapi

    def openapi_with_catalog() -> dict[str, Any]:
        if api.openapi_schema is None:
            describe_catalog(framework_openapi(), runtime.catalog)
        return api.openapi_schema  # type: ignore[return-value]

    api.openapi = openapi_with_catalog  # type: ignore[method-assign]

    @api.get("/metrics", include_in_schema=False)
    def prometheus_metrics(request: Request) -> Response:
        """Prometheus text format (see `tallykey.monitor.metrics`). With
        `TALLYKEY_METRICS_TOKEN` set, only `Authorization: Bearer <that value>` is served."""
        expected = runtime.settings.metrics_token
        if expected:
            presented = header_credential(request) or ""
            if not hmac.compare_digest(presented.encode(), f"Bearer {expected}".encode()):
                raise MetricsCredentialRequired()
        verifier.publish_metrics()
        counter = getattr(api.state, "response_counter", None)
        if counter is not None:
            counter.publish()
        offset = runtime.database_clock.offset if runtime.database.dialect == "postgresql" \
            else 0.0
        return Response(metrics.exposition(runtime.database, offset),
                        media_type=metrics.CONTENT_TYPE)

    @api.get("/healthz", tags=["health"])
    async def healthz() -> JSONResponse:
        """`ok` (200) with the store answering and this node's lease held; `degraded`
        (200) while it still verifies something (cached tokens within
        TALLYKEY_STALE_IF_ERROR and the lease, or loads without the lease); `down`
        (503) once it can verify nothing. Answered from what the node knows, with no
        I/O, on the event loop: never slower than the loop itself."""
        state = verifier.follower.health()
        serving = state["status"] != "down"
        body = {"status": state["status"], "region": runtime.settings.region,
                **{key: value for key, value in state.items() if key != "status"}}
        return JSONResponse(body, status_code=200 if serving else 503,
                            headers={} if serving else {"Retry-After": "2"})

    return api


#: Request bodies whose scope lists take the catalog's scopes (and refuse others: 422).
_SCOPE_FIELDS = {"TokenCreate": "scopes", "TokenUpdate": "scopes"}


def describe_catalog(schema: dict[str, Any], catalog: ScopeCatalog) -> None:
    """Put the deployment's scope catalog (names and descriptions) into the OpenAPI
    document, so `/docs` shows this platform's permissions, not the demo's."""
    listing = "; ".join(f"`{s.name}`: {s.description}" + (" (admins only)" if s.admin_only
                                                           else "")
                        for s in catalog.scopes())
    components = schema.get("components", {}).get("schemas", {})
    for model, field_name in _SCOPE_FIELDS.items():
        prop = components.get(model, {}).get("properties", {}).get(field_name)
        if prop is None:
            continue
        target = next((option for option in prop.get("anyOf", [])
                       if option.get("type") == "array"), prop)
        target["items"] = {"type": "string", "enum": list(catalog.names)}
        prop["description"] = "Scopes from the catalog: " + listing
    schema.setdefault("info", {})["description"] = (
        schema.get("info", {}).get("description", "") + "\n\n**Scope catalog** ("
        + catalog.source + "): " + listing)


def create_demo_app(runtime: Runtime | None = None) -> ASGIApp:
    """The service with the demo platform API (`/core/v3`): what `tallykey demo` serves."""
    return create_app(runtime, demo=True)


def create_app(runtime: Runtime | None = None, *, demo: bool = False) -> ASGIApp:
    """The whole service. Without arguments it reads `TALLYKEY_*` settings (uvicorn
    factory for `tallykey serve --workers N`). The demo platform API only with `demo`."""
    runtime = runtime or Runtime.build()
    runtime.ensure_schema()
    runtime.check_keys()
    verifier = runtime.build_verifier(background=False)
    api = build_api(runtime, verifier, demo=demo)
    settings = runtime.settings

    def https(scope: Scope) -> bool:
        return served_over_https(scope, settings.trusted_proxy_networks, settings.public_url)

    endpoint = AuthRequestEndpoint(verifier, settings, https, runtime.operations)
    app: ASGIApp = Dispatcher(endpoint, RequestBounds(api, https=https))
    api.state.response_counter = app = metrics.ResponseCounter(app)
    if runtime.settings.log_format == "json":
        app = AccessLog(app, runtime.settings.trusted_proxy_networks)
    return app
