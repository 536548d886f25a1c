"""Request dependencies: the runtime, the client's IP, and who is calling the management
API (a console session with CSRF protection, or an administrator's management token).

Every route that changes something takes `ManagementActor`, which refuses an auditor
(403, reason `auditor_read_only`) on every method but GET/HEAD/OPTIONS: a new write route
is covered by taking it. Only a person's own sign-in (their password, their sessions,
signing out) takes `OwnActor` instead, which any role may use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from tallykey.accounts.models import User
from tallykey.accounts.sign_in import NETWORK_FAILURES_PER_MINUTE
from tallykey.actor import Actor
from tallykey.api.responses import VerdictRefused
from tallykey.audit import trail
from tallykey.auth.header import extract_token, missing_header
from tallykey.auth.middleware import TOKEN_ID_STATE, misplaced_token_headers, token_in_url
from tallykey.auth.verdict import Verdict
from tallykey.auth.verifier import Verifier
from tallykey.errors import PermissionDenied, ReadOnlyRole, TallykeyError, Unauthenticated
from tallykey.network.client_ip import scope_client_ip, served_over_https
from tallykey.network.limiter import FailureLimiter
from tallykey.people.sessions import (
    CSRF_HEADER,
    SESSION_COOKIE,
    SESSION_LIFETIME,
    OpenSession,
    csrf_matches,
)
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


def cookie_flags(request: Request) -> dict[str, Any]:
    """The flags of every cookie the server sets for a person: HttpOnly, SameSite=Lax, and
    `Secure` whenever the client reached us over HTTPS (`is_https`: directly, through a
    trusted proxy, or per an https `TALLYKEY_PUBLIC_URL`)."""
    return {"httponly": True, "samesite": "lax", "secure": is_https(request)}


def open_session(request: Request, user: User, *, via: str, method: str,
                 respond: Callable[[OpenSession], Response],
                 pending: OpenSession | None = None) -> tuple[OpenSession, Response]:
    """The one way a sign-in opens a session, for every path (password on the console
    or the API, first-run setup, single sign-on; `pending`: the second factor swapping a
    session that awaited it for a full one). In one transaction the user and account are
    checked active, the session opened and the sign-in audited (`user.login`, or
    `user.login_second_factor`); then `respond(opened)` is answered with the cookie set
    with `cookie_flags`."""
    runtime = runtime_of(request)
    ip = ip_of(request)
    actor = Actor(user.account_id, user.id, user.role, user.email, ip, via)
    with runtime.database.transaction() as session:
        if pending is None:
            opened = runtime.sessions.open_in(session, user, ip,
                                              request.headers.get("user-agent"))
            action = "user.login"
            details: dict[str, Any] = {"method": method}
            if opened.awaiting:
                details["awaiting"] = opened.awaiting
        else:
            opened = runtime.sessions.complete(session, pending)
            action, details = "user.login_second_factor", {"method": method}
        trail.record(session, actor=actor, action=action, at=runtime.clock.now(),
                     target_type="user", target_id=user.id, details=details)
    response = respond(opened)
    response.set_cookie(SESSION_COOKIE, opened.cookie,
                        max_age=int(SESSION_LIFETIME.total_seconds()), path="/",
                        **cookie_flags(request))
    return opened, response


async def management_actor(request: Request) -> Actor:
    """The caller of a management endpoint, or an error saying how to authenticate; an
    auditor only on a read (GET, HEAD, OPTIONS): any other method answers 403
    `auditor_read_only` before the route runs (SPEC §17)."""
    actor = await own_actor(request)
    if actor.is_auditor and request.method not in SAFE_METHODS:
        raise ReadOnlyRole()
    return actor


async def own_actor(request: Request) -> Actor:
    """The caller, whatever their role: for the routes where a person manages their own
    sign-in only (their password, their sessions, signing out), which an auditor may use
    too. Every other route takes `management_actor`."""
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
        authorization, ip, (MANAGE_SCOPE,), request.headers.get("user-agent"),
        path=request.url.path)
    if verdict.token_id is not None:
        setattr(request.state, TOKEN_ID_STATE, verdict.token_id)
    if not verdict.allowed:
        raise VerdictRefused(verdict)
    if verdict.kind != PERSONAL or verdict.owner_id is None or verdict.account_id is None:
        raise PermissionDenied(
            "The management API needs a personal token of an administrator.",
            "Create a personal token with the tokens:manage scope as an administrator.")
    actor = Actor(verdict.account_id, verdict.owner_id, "admin", verdict.owner_email or "",
                  ip, "api", token_digest=presented_digest(authorization))
    if request.method not in SAFE_METHODS:
        await run_in_threadpool(runtime.tokens.require_current_secret, actor)
    return actor


def presented_digest(authorization: str | None) -> str | None:
    """The stored hash of the token an allowed `Authorization` header carries (so the
    token service can tell a current secret from one in its grace period)."""
    try:
        return hash_token(extract_token(authorization))
    except (TallykeyError, UnicodeError):
        return None


ManagementActor = Annotated[Actor, Depends(management_actor)]
#: A person's own sign-in only (see `own_actor`): never for a change to the account.
OwnActor = Annotated[Actor, Depends(own_actor)]
RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
