"""Verification for other services: `POST /api/v1/verify` (JSON verdict) and
`GET /auth/request` for reverse proxies (nginx `auth_request`, Traefik ForwardAuth).

`/auth/request` is plain ASGI, outside the framework, because every proxied request of
every customer passes through it.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from starlette.types import Receive, Scope, Send

from tallykey.api.deps import ip_of, runtime_of, verifier_of
from tallykey.api.responses import error_responses
from tallykey.api.schemas import RateLimitStateView, VerifyRequest, VerifyResponse
from tallykey.auth.middleware import TOKEN_ID_STATE, send_refusal, verify_scope
from tallykey.auth.verdict import Verdict
from tallykey.auth.verifier import Verifier
from tallykey.controls.rules import parse_cost
from tallykey.errors import InvalidCost, MalformedHeader
from tallykey.network.client_ip import is_trusted
from tallykey.settings import Settings

router = APIRouter(prefix="/api/v1", tags=["verification"],
                   responses=error_responses(400, 413, 422, 503))

SCOPES_HEADER = b"tallykey-required-scopes"
COST_HEADER = b"tallykey-cost"
WORKSPACE_HEADER = b"tallykey-workspace"


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
                                                 body.cost)
    if verdict.token_id is not None:
        setattr(request.state, TOKEN_ID_STATE, verdict.token_id)
    return VerifyResponse(
        allowed=verdict.allowed, status=verdict.status,
        error=verdict.body()["error"] if verdict.error else None,
        message=verdict.message or None, hint=verdict.hint or None,
        token_id=verdict.token_id, account=verdict.account, kind=verdict.kind,
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
        external_id=verdict.external_id)


def identity_headers(verdict: Verdict) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"tallykey-token-id", (verdict.token_id or "").encode()),
        (b"tallykey-account", (verdict.account or "").encode()),
        (b"tallykey-scopes", verdict.scopes_text.encode()),
        (b"tallykey-token-expires", verdict.expires_iso.encode()),
        (b"tallykey-token-kind", (verdict.kind or "").encode()),
    ]
    if verdict.owner_id:
        headers.append((b"tallykey-user-id", verdict.owner_id.encode()))
    if verdict.workspace:
        headers.append((b"tallykey-workspace", verdict.workspace.encode()))
    if verdict.external_id is not None:
        headers.append((b"tallykey-external-id", verdict.external_id.encode()))
    if verdict.rates is not None:
        headers += [(k.lower().encode(), v.encode())
                    for k, v in verdict.rate_limit_headers().items()]
    return headers


class AuthRequestEndpoint:
    """`GET /auth/request`: 204 with identity headers, or the refusal with its status,
    RFC 6750 challenge and JSON body. Required scopes come from `?scope=` (repeatable)
    or a `Tallykey-Required-Scopes` header (space separated); the workspace they must be
    held in from a `Tallykey-Workspace` header or `?workspace=` (id or slug). Without a
    workspace a scope passes only if the token holds it in every workspace it sees."""

    def __init__(self, verifier: Verifier, settings: Settings) -> None:
        self.verifier = verifier
        self.trusted = settings.trusted_proxy_networks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scopes: list[str] = []
        workspaces: list[str] = []
        cost: int | None = 1
        for name, value in scope["headers"]:
            if name == SCOPES_HEADER:
                scopes.extend(value.decode("latin-1").split())
            elif name == WORKSPACE_HEADER:
                workspaces.append(value.decode("latin-1").strip())
            elif name == COST_HEADER:
                cost = parse_cost(value.decode("latin-1"))
        if cost is None:
            await send_refusal(Verdict.refused(InvalidCost(
                "The Tallykey-Cost header must be a whole number from 0 to 1000.",
                "Send the credits this request costs, e.g. Tallykey-Cost: 5, or leave the "
                "header out (cost 1).", header="Tallykey-Cost")), send)
            return
        if scope.get("query_string"):
            query = scope["query_string"].decode("latin-1")
            for key, value in parse_qsl(query):
                if key == "scope":
                    scopes.append(value)
                elif key == "workspace":
                    workspaces.append(value.strip())
        named = {w for w in workspaces if w}
        if len(named) > 1:
            await send_refusal(Verdict.refused(MalformedHeader(
                "The request names more than one workspace.",
                "Send one Tallykey-Workspace header or one ?workspace=, not both "
                "with different values.")), send)
            return
        verdict = await verify_scope(self.verifier, scope, scopes, self.trusted,
                                     named.pop() if named else None, cost)
        if not verdict.allowed:
            await send_refusal(verdict, send)
            return
        await send({"type": "http.response.start", "status": 204,
                    "headers": identity_headers(verdict)})
        await send({"type": "http.response.body", "body": b""})
