"""Verification for other services: `POST /api/v1/verify` (JSON verdict) and
`GET /auth/request` for reverse proxies (nginx `auth_request`, Traefik ForwardAuth).

`/auth/request` is plain ASGI, outside the framework and the request-size layer, because
every proxied request of every customer passes through it.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from starlette.types import Receive, Scope, Send

from tallykey.api.responses import error_responses
from tallykey.api.schemas import IdentityRef, RateLimitStateView, VerifyRequest, VerifyResponse
from tallykey.auth.caller import TOKEN_ID_STATE, RefusalResponse, credentials_verdict
from tallykey.auth.operations import Operation, OperationTable
from tallykey.auth.verdict import Verdict
from tallykey.auth.verifier import Verifier
from tallykey.controls.rules import parse_cost
from tallykey.errors import InvalidCost, MalformedHeader, TallykeyError
from tallykey.network.client_ip import is_trusted
from tallykey.settings import Settings
from tallykey.web.bounds import (
    HSTS,
    MAX_HEADER_COUNT,
    NO_STORE,
    SECURITY_HEADERS,
    refuse_header_count,
)
from tallykey.web.deps import ip_of, runtime_of, verifier_of

router = APIRouter(prefix="/api/v1", tags=["verification"],
                   responses=error_responses(400, 413, 422, 503))

SCOPES_HEADER = b"tallykey-required-scopes"
COST_HEADER = b"tallykey-cost"
WORKSPACE_HEADER = b"tallykey-workspace"
#: The request the gateway asks about, for scopes from the OpenAPI document (SPEC §15).
ORIGINAL_METHOD = b"x-original-method"
ORIGINAL_URI = b"x-original-uri"
#: Sent by a proxy that cannot pass a refusal's body on (nginx): the refusal then repeats
#: its JSON body in a `Tallykey-Refusal` header.
WANTS_REFUSAL_HEADER = b"tallykey-refusal-header"


@router.post("/verify", response_model=VerifyResponse)
async def verify(body: VerifyRequest, request: Request) -> VerifyResponse:
    """Verify a credential on behalf of another service. The answer is always 200 with the
    verdict; `status` is what that service should answer its own client."""
    runtime = runtime_of(request)
    caller_ip = ip_of(request)
    ip = caller_ip
    peer = request.client.host if request.client else ""
    if body.client_ip and is_trusted(peer, runtime.settings.trusted_proxy_networks):
        ip = body.client_ip
    authorization = body.authorization
    if authorization is None and body.token is not None:
        authorization = f"Bearer {body.token}"
    verdict = await verifier_of(request).averify(authorization, ip, body.required_scopes,
                                                 body.user_agent, body.workspace or None,
                                                 body.cost, request.url.path)
    if verdict.token_id is not None:
        setattr(request.state, TOKEN_ID_STATE, verdict.token_id)
    return VerifyResponse(
        allowed=verdict.allowed, status=verdict.status,
        error=verdict.body()["error"] if verdict.error else None,
        reason=verdict.reason or None,
        message=verdict.message or None, hint=verdict.hint or None,
        token_id=verdict.token_id, name=verdict.name, account=verdict.account,
        kind=verdict.kind,
        scopes=sorted(verdict.scopes), expires_at=verdict.expires_at, client_ip=ip,
        workspace=verdict.workspace,
        workspaces={ws: sorted(held) for ws, held in verdict.workspaces.items()},
        retry_after=verdict.retry_after,
        rate_limits=[RateLimitStateView(name=state.name, limit=state.limit,
                                        per_seconds=state.per_seconds,
                                        remaining=state.remaining, reset=state.reset)
                     for state in verdict.rate_limits],
        credits_remaining=verdict.credits_remaining,
        metadata=dict(verdict.metadata) if verdict.metadata is not None else None,
        external_id=verdict.external_id,
        identity=IdentityRef(**verdict.identity) if verdict.identity is not None else None,
        identity_credits_remaining=verdict.identity_credits_remaining)


class AuthRequestEndpoint:
    """`/auth/request`: 204 with identity headers, or the refusal with its status,
    RFC 6750 challenge and JSON body. Required scopes come from `?scope=` (repeatable)
    or a `Tallykey-Required-Scopes` header (space separated); the workspace they must be
    held in from a `Tallykey-Workspace` header or `?workspace=` (id or slug). Without a
    workspace a scope passes only if the token holds it in every workspace it sees.

    Served before the request-size layer and the framework (it reads no body), so it
    does its own header-count check. The 204 carries the verdict's identity headers,
    built once per cached verdict, plus `Cache-Control: no-store`; the security headers
    meant for browsers (nosniff, frame and referrer policies, HSTS) are left off it,
    since only the proxy reads it. Refusals, which Traefik ForwardAuth hands to the
    client as they are, carry every security header like any other response.

    Per-request headers (rate limits, credits) belong in `extra_headers`: they are
    appended to the cached identity headers, which are never copied or rebuilt.

    With the platform's OpenAPI document (`operations`, SPEC §15) the operation named by
    `X-Original-Method`/`X-Original-URI` (or, for Envoy, this request's method and the
    path after `/auth/request`) adds the scopes it needs, is public, or is refused (404
    `unknown_operation`). `Tallykey-Refusal-Header: 1` makes a refusal repeat its JSON
    body in a `Tallykey-Refusal` header, for nginx, whose `auth_request` drops bodies.
    """

    def __init__(self, verifier: Verifier, settings: Settings,
                 https: Callable[[Scope], bool] | None = None,
                 operations: OperationTable | None = None) -> None:
        self.verifier = verifier
        self.trusted = settings.trusted_proxy_networks
        self.https = https or (lambda scope: scope.get("scheme") == "https")
        self.operations = operations

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope["headers"]
        if len(headers) > MAX_HEADER_COUNT:
            await refuse_header_count(send, len(headers))
            return
        authorizations: list[bytes] = []
        agent = None
        scopes: list[str] = []
        workspaces: list[str] = []
        cost: int | None = 1
        in_header = False
        method = target = None
        read = _READ.get
        for name, value in headers:  # one pass for everything this endpoint reads
            which = read(name)  # one dict look-up for a header it does not read
            if which is None:
                continue
            if which is _AUTHORIZATION:
                authorizations.append(value)
            elif which is _AGENT:
                agent = value
            elif which is _SCOPES:
                scopes.extend(value.decode("latin-1").split())
            elif which is _WORKSPACE:
                workspaces.append(value.decode("latin-1").strip())
            elif which is _COST:
                cost = parse_cost(value.decode("latin-1"))
            elif which is _WANTS_REFUSAL:
                in_header = True
            elif which is _METHOD:
                method = value.decode("latin-1")
            else:
                target = value.decode("latin-1")
        if cost is None:
            await self.refuse(scope, receive, send, in_header, Verdict.refused(InvalidCost(
                "The Tallykey-Cost header must be a whole number from 0 to 1000.",
                "Send the credits this request costs, e.g. Tallykey-Cost: 5, or leave the "
                "header out (cost 1).", header="Tallykey-Cost")))
            return
        # `?scope=`/`?workspace=` are the gateway's own; under /auth/request/<path>
        # (Envoy) the query string is the client's, so it decides nothing
        query = scope.get("query_string") if scope["path"] == "/auth/request" else None
        if query:
            for key, value in query_arguments(query):
                if key == "scope":
                    scopes.append(value)
                elif key == "workspace":
                    workspaces.append(value.strip())
        if self.operations is not None:
            operation = self.operation(scope, method, target)
            if not isinstance(operation, Operation):
                await self.refuse(scope, receive, send, in_header, Verdict.refused(operation))
                return
            if operation.public:  # the document says no token is needed
                await send({"type": "http.response.start", "status": 204,
                            "headers": _ALLOWED_TAIL})
                await send({"type": "http.response.body", "body": b""})
                return
            scopes.extend(operation.scopes)
        named = {w for w in workspaces if w} if workspaces else None
        if named and len(named) > 1:
            await self.refuse(scope, receive, send, in_header, Verdict.refused(MalformedHeader(
                "The request names more than one workspace.",
                "Send one Tallykey-Workspace header or one ?workspace=, not both "
                "with different values.")))
            return
        verdict = credentials_verdict(self.verifier, scope, authorizations, agent, scopes,
                                      self.trusted, named.pop() if named else None, cost,
                                      target or scope["path"])
        if not isinstance(verdict, Verdict):  # not cached: the store, off the event loop
            verdict = await verdict
        if not verdict.allowed:
            await self.refuse(scope, receive, send, in_header, verdict)
            return
        extra = self.extra_headers(scope, verdict) if verdict.rates is not None else None
        await send({"type": "http.response.start", "status": 204,
                    "headers": verdict.identity_headers() + _ALLOWED_TAIL if not extra
                    else [*verdict.identity_headers(), NO_STORE, *extra]})
        await send({"type": "http.response.body", "body": b""})

    def operation(self, scope: Scope, method: str | None,
                  target: str | None) -> Operation | TallykeyError:
        """The OpenAPI operation the gateway asks about: `X-Original-Method` and
        `X-Original-URI`, or (Envoy `ext_authz`) this request's method and the path after
        `/auth/request`."""
        assert self.operations is not None
        if method is None or target is None:
            path: str = scope["path"]
            if not path.startswith("/auth/request/"):
                return MalformedHeader(
                    "The request does not say which operation it is for.",
                    "The gateway must send X-Original-Method and X-Original-URI (the "
                    "configurations in deploy/ do).")
            method, target = scope["method"], path[len("/auth/request"):]
            return self.operations.decide(method, target, raw=False)
        return self.operations.decide(method, target)

    def extra_headers(self, scope: Scope, verdict: Verdict) -> list[tuple[bytes, bytes]]:
        """The per-request headers of an allowed answer, appended after the cached
        identity headers (which every request of the token shares and which are never
        rebuilt): `RateLimit-*` as counted now, for a token with rate limits. `[]` (the
        common case) adds nothing."""
        if verdict.rates is None:
            return []
        return [(k.lower().encode(), v.encode())
                for k, v in verdict.rate_limit_headers().items()]

    async def refuse(self, scope: Scope, receive: Receive, send: Send, in_header: bool,
                     verdict: Verdict) -> None:
        security = [*SECURITY_HEADERS, NO_STORE]
        if self.https(scope):
            security.append(HSTS)
        await RefusalResponse(verdict, security, in_header)(scope, receive, send)


def query_arguments(query: bytes) -> list[tuple[str, str]]:
    """`parse_qsl` of a raw query string, with the plain arguments (no `%` or `+`, as
    proxies send `?scope=orders:read`) split without it: the same pairs, a third of the
    time. Decoded once, whole (Latin-1 maps byte for byte, so splitting before or after
    decoding gives the same text)."""
    text = query.decode("latin-1")
    if "%" not in text and "+" not in text:  # the common case: every argument plain
        pairs = []
        for part in text.split("&"):
            key, _, value = part.partition("=")
            if value:  # parse_qsl leaves out blank values too
                pairs.append((key, value))
        return pairs
    pairs = []
    for part in text.split("&"):
        if "%" in part or "+" in part:
            pairs += parse_qsl(part)
            continue
        key, _, value = part.partition("=")
        if value:
            pairs.append((key, value))
    return pairs


#: The request headers `/auth/request` reads, each named by the constant its value is.
(_AUTHORIZATION, _AGENT, _SCOPES, _WORKSPACE, _COST, _WANTS_REFUSAL, _METHOD,
 _URI) = range(8)
_READ = {b"authorization": _AUTHORIZATION, b"user-agent": _AGENT, SCOPES_HEADER: _SCOPES,
         WORKSPACE_HEADER: _WORKSPACE, COST_HEADER: _COST,
         WANTS_REFUSAL_HEADER: _WANTS_REFUSAL, ORIGINAL_METHOD: _METHOD,
         ORIGINAL_URI: _URI}

#: What every 204 ends with: a verdict must never be stored by a cache in between.
_ALLOWED_TAIL = (NO_STORE,)
