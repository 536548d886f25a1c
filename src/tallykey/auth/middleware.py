"""Protect any ASGI app with tallykey, in-process: `TallykeyMiddleware` (pure ASGI) and
`TallykeyAuth` (a FastAPI dependency, per route). Both answer a refusal the same way.

    app = TallykeyMiddleware(app, verifier=Verifier(), required_scopes=["employees:read"])

A passing request carries its `Verdict` in `scope["state"]["tallykey"]` (Starlette:
`request.state.tallykey`) and its response gets the `Tallykey-Token-Expires` header
(`expiry_header=False` leaves it off, and with it the one per-request object the
middleware makes). A refused one is answered here: status, RFC 6750 challenge, JSON
body. The plaintext token lives only in the call that verifies it: nothing is cached by
the raw header, only by the token's SHA-256 (`Verifier`).

Permissions are per workspace (SPEC §11): pass `workspace=`, a function of the request
that returns the workspace (id or slug) it is for, or None when it names none:

    app = TallykeyMiddleware(app, verifier=Verifier(), required_scopes=["orders:read"],
                             workspace=lambda request: request.headers.get("x-project"))

(`TallykeyAuth` runs after routing, so its resolver may read `request.path_params`.)

Then a scope passes only if the token holds it in that workspace. Without a workspace,
a scope passes only if the token holds it in every workspace it sees.

Routes that need no token (the app's own `/docs`, a health check) are `public_paths`:
exact paths, prefixes ending in `*`, or functions of the request that say True for a
public one, in any mix:

    app = TallykeyMiddleware(app, verifier=Verifier(),
                             public_paths=["/docs", "/openapi.json", "/static/*",
                                           lambda request: request.method == "OPTIONS"])

A public request reaches the app unverified, without `request.state.tallykey`.

With `TALLYKEY_OPENAPI_FILE` set (or `operations=OperationTable.load(...)`), each
request needs the scopes its operation names in the platform's OpenAPI document, on top
of `required_scopes`; an operation the document does not list is refused (404
`unknown_operation`) unless `TALLYKEY_OPENAPI_UNLISTED=allow`, and one it marks public
(`security: []`) needs no token (`tallykey.auth.operations`).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tallykey.accounts.scopes import load_catalog
from tallykey.asgi import direct
from tallykey.auth.caller import (
    RefusalResponse,
    TallykeyRefused,
    answer_refusal,
    credentials,
    credentials_verdict,
    verify_scope,
)
from tallykey.auth.operations import Operation, OperationTable
from tallykey.auth.verdict import Verdict
from tallykey.auth.verifier import Verifier
from tallykey.network.client_ip import IpNetwork

__all__ = ["STATE_KEY", "PublicPaths", "TallykeyAuth", "TallykeyMiddleware",
           "TallykeyRefused"]

STATE_KEY = "tallykey"
#: A function of the request naming the workspace it is for (id or slug), or None.
WorkspaceResolver = Callable[[Request], "str | Awaitable[str | None] | None"]
#: A function of the request that says True for a route that needs no token.
PublicRule = Callable[[Request], bool]


class PublicPaths:
    """Which requests need no token: exact paths (one set lookup), prefixes written with a
    trailing `*` (one `startswith` over a tuple) and functions of the request."""

    __slots__ = ("exact", "prefixes", "rules")

    def __init__(self, paths: Iterable[str | PublicRule] | PublicRule) -> None:
        entries: list[str | PublicRule] = [paths] if callable(paths) else list(paths)
        exact: set[str] = set()
        prefixes: list[str] = []
        rules: list[PublicRule] = []
        for entry in entries:
            if callable(entry):
                rules.append(entry)
            elif not isinstance(entry, str) or not entry.startswith("/"):
                raise ValueError(f"public_paths takes paths that start with '/' (a prefix "
                                 f"ends in '*') or functions of the request, not {entry!r}")
            elif entry.endswith("*"):
                prefixes.append(entry[:-1])
            else:
                exact.add(entry)
        self.exact = frozenset(exact)
        self.prefixes = tuple(prefixes)
        self.rules = tuple(rules)

    def __bool__(self) -> bool:
        return bool(self.exact or self.prefixes or self.rules)

    def __call__(self, scope: Scope) -> bool:
        path = scope["path"]
        if path in self.exact or (self.prefixes and path.startswith(self.prefixes)):
            return True
        if self.rules:
            request = Request(scope)
            return any(rule(request) for rule in self.rules)
        return False


async def resolve_workspace(resolver: WorkspaceResolver | None, scope: Scope) -> str | None:
    if resolver is None:
        return None
    found = resolver(Request(scope))
    if inspect.isawaitable(found):
        found = await found
    return found or None


def _with_headers(send: Send, verdict: Verdict, expiry: bool) -> Send:
    """`send` that adds the verdict's response headers to the response start:
    `Tallykey-Token-Expires` (unless left off) and, for a token with rate limits, its
    `RateLimit-*` as counted then. Not a coroutine itself: it hands back the wrapped
    `send`'s awaitable, so each message costs one plain call, not one more coroutine
    frame (and a closure costs less than an object per request)."""

    def with_headers(message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", ())]
            if expiry:
                headers.append(verdict.expiry_header())
            if verdict.rates is not None:  # RateLimit-* as counted now
                headers += [(k.lower().encode(), v.encode())
                            for k, v in verdict.rate_limit_headers().items()]
            message["headers"] = headers
        return send(message)

    return with_headers


class TallykeyMiddleware:
    """Verify every HTTP request before `app` sees it, except `public_paths` (see the
    module); `expiry_header=False` leaves `Tallykey-Token-Expires` off the responses (and
    the `send` wrapper with it)."""

    def __init__(self, app: ASGIApp, verifier: Verifier,
                 required_scopes: Iterable[str] = (),
                 trusted_proxies: Sequence[IpNetwork] | None = None,
                 workspace: WorkspaceResolver | None = None,
                 expiry_header: bool = True,
                 public_paths: Iterable[str | PublicRule] | PublicRule = (),
                 operations: OperationTable | None = None) -> None:
        self.app = app
        self._app = direct(app)
        self.verifier = verifier
        self.required_scopes = tuple(required_scopes)
        self.workspace = workspace
        self.expiry_header = expiry_header
        self.trusted = (verifier.settings.trusted_proxy_networks
                        if trusted_proxies is None else tuple(trusted_proxies))
        public = PublicPaths(public_paths)
        self.public = public if public else None
        settings = verifier.settings
        if operations is None and settings.openapi_file:  # one line if the document is bad
            operations = OperationTable.load(settings.openapi_file,
                                             load_catalog(settings.scopes_file),
                                             settings.openapi_unlisted)
        self.operations = operations

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.public is not None and self.public(scope)):
            await self._app(scope, receive, send)
            return
        required = self.required_scopes
        if self.operations is not None:
            operation = self.operations.decide(scope["method"], scope["path"], raw=False)
            if not isinstance(operation, Operation):
                await RefusalResponse(Verdict.refused(operation))(scope, receive, send)
                return
            if operation.public:
                await self._app(scope, receive, send)
                return
            if operation.scopes:
                required = (*required, *operation.scopes) if required else operation.scopes
        workspace = (None if self.workspace is None
                     else await resolve_workspace(self.workspace, scope))
        authorizations, agent = credentials(scope["headers"])
        verdict = credentials_verdict(self.verifier, scope, authorizations, agent, required,
                                      self.trusted, workspace)
        if not isinstance(verdict, Verdict):  # not cached: the store, off the event loop
            verdict = await verdict
        if not verdict.allowed:
            await RefusalResponse(verdict)(scope, receive, send)
            return
        scope["state"][STATE_KEY] = verdict  # verify_credentials made the state
        if self.expiry_header or verdict.rates is not None:
            send = _with_headers(send, verdict, self.expiry_header)
        await self._app(scope, receive, send)


def _install_handler(request: Request) -> None:
    """Register `answer_refusal` with the app's exception middleware on first use, so an
    app that only adds `Depends(TallykeyAuth(...))` gets the right answers with no setup.
    Starlette keeps the handlers of a running app in the request scope."""
    handlers = request.scope.get("starlette.exception_handlers")
    if handlers and TallykeyRefused not in handlers[0]:
        handlers[0][TallykeyRefused] = answer_refusal


class TallykeyAuth:
    """FastAPI dependency: `verdict: Verdict = Depends(TallykeyAuth(verifier, ["x:read"]))`.

    A refusal is answered exactly as `TallykeyMiddleware` answers it: the status, the
    RFC 6750 challenge and the top-level JSON error body (`{"error", "message", …}`)."""

    def __init__(self, verifier: Verifier, required_scopes: Iterable[str] = (),
                 trusted_proxies: Sequence[IpNetwork] | None = None,
                 workspace: WorkspaceResolver | None = None) -> None:
        self.verifier = verifier
        self.required_scopes = tuple(required_scopes)
        self.workspace = workspace
        self.trusted = (verifier.settings.trusted_proxy_networks
                        if trusted_proxies is None else tuple(trusted_proxies))

    async def __call__(self, request: Request) -> Verdict:
        workspace = await resolve_workspace(self.workspace, request.scope)
        verdict = await verify_scope(self.verifier, request.scope, self.required_scopes,
                                     self.trusted, workspace)
        if not verdict.allowed:
            _install_handler(request)
            raise TallykeyRefused(verdict)
        request.state.tallykey = verdict
        return verdict
