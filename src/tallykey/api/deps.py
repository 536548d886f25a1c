"""Request dependencies: the runtime, the client's IP, and who is calling the management
API (a console session with CSRF protection, or an administrator's management token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from tallykey.accounts.sign_in import NETWORK_FAILURES_PER_MINUTE
from tallykey.actor import Actor
from tallykey.api.responses import VerdictRefused
from tallykey.auth.header import extract_token, missing_header
from tallykey.auth.middleware import TOKEN_ID_STATE, misplaced_token_headers, token_in_url
from tallykey.auth.verdict import Verdict
from tallykey.auth.verifier import Verifier
from tallykey.errors import PermissionDenied, TallykeyError, Unauthenticated
from tallykey.network.client_ip import scope_client_ip, served_over_https
from tallykey.network.limiter import FailureLimiter
from tallykey.people.sessions import CSRF_HEADER, SESSION_COOKIE, csrf_matches
from tallykey.runtime import Runtime
from tallykey.tokens.format import hash_token
from tallykey.tokens.models import PERSONAL

MANAGE_SCOPE = "tokens:manage"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def verifier_of(request: Request) -> Verifier:
    verifier: Verifier = request.app.state.verifier
    return verifier


def login_limiter(request: Request) -> FailureLimiter:
    """Failed sign-ins per client network and minute, shared by the console form and the
    session API (one limiter per app), so neither is a way around the other."""
    limiter: FailureLimiter | None = getattr(request.app.state, "login_limiter", None)
    if limiter is None:
        limiter = FailureLimiter(NETWORK_FAILURES_PER_MINUTE)
        request.app.state.login_limiter = limiter
    return limiter


def ip_of(request: Request) -> str:
    return scope_client_ip(request.scope, runtime_of(request).settings.trusted_proxy_networks)


def is_https(request: Request) -> bool:
    """Served over HTTPS (directly, via a trusted proxy, or per `TALLYKEY_PUBLIC_URL`):
    then cookies are `Secure`."""
    settings = runtime_of(request).settings
    return served_over_https(request.scope, settings.trusted_proxy_networks,
                             settings.public_url)


async def management_actor(request: Request) -> Actor:
    """The caller of a management endpoint, or an error saying how to authenticate."""
    runtime = runtime_of(request)
    in_url = token_in_url(request.scope.get("query_string", b""))
    if in_url is not None:
        raise VerdictRefused(in_url)
    ip = ip_of(request)
    authorization = request.headers.get("authorization")
    cookie = request.cookies.get(SESSION_COOKIE)
    if authorization is None and cookie:
        session = await run_in_threadpool(runtime.sessions.find_any, cookie)
        if session is None:
            raise Unauthenticated("Your console session has expired or was signed out.",
                                  "Sign in again.")
        if session.awaiting is not None:
            raise Unauthenticated("This sign-in still needs its second factor.",
                                  "Send the authenticator code to POST "
                                  "/api/v1/session/second-factor.",
                                  awaiting=session.awaiting)
        if request.method not in SAFE_METHODS and not csrf_matches(
                session, request.headers.get(CSRF_HEADER)):
            raise PermissionDenied("The CSRF token is missing or wrong.",
                                   f"Send the session's CSRF token in the {CSRF_HEADER} header.",
                                   reason="csrf")
        user = session.user
        return Actor(user.account_id, user.id, user.role, user.email, ip, "console")
    elsewhere = misplaced_token_headers(request.scope) if authorization is None else []
    if elsewhere:
        raise VerdictRefused(Verdict.refused(missing_header(elsewhere)))
    verdict = await verifier_of(request).averify(
        authorization, ip, (MANAGE_SCOPE,), request.headers.get("user-agent"))
    if verdict.token_id is not None:
        setattr(request.state, TOKEN_ID_STATE, verdict.token_id)
    if not verdict.allowed:
        raise VerdictRefused(verdict)
    if verdict.kind != PERSONAL or verdict.owner_id is None or verdict.account_id is None:
        raise PermissionDenied(
            "The management API needs a personal token of an administrator.",
            "Create a personal token with the tokens:manage scope as an administrator.")
    return Actor(verdict.account_id, verdict.owner_id, "admin", verdict.owner_email or "",
                 ip, "api", token_digest=presented_digest(authorization))


def presented_digest(authorization: str | None) -> str | None:
    """The stored hash of the token an allowed `Authorization` header carries (so the
    token service can tell a current secret from one in its grace period)."""
    try:
        return hash_token(extract_token(authorization))
    except (TallykeyError, UnicodeError):
        return None


ManagementActor = Annotated[Actor, Depends(management_actor)]
RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
