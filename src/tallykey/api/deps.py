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
from tallykey.audit import trail
from tallykey.auth.caller import (
    SAFE_METHODS,
    SessionAuthenticator,
    TokenAuthenticator,
    authenticate,
)
from tallykey.auth.verifier import Verifier
from tallykey.errors import PermissionDenied, ReadOnlyRole
from tallykey.network.client_ip import scope_client_ip, served_over_https
from tallykey.network.limiter import FailureLimiter
from tallykey.people.sessions import CSRF_HEADER, SESSION_COOKIE, SESSION_LIFETIME, OpenSession
from tallykey.runtime import Runtime
from tallykey.tokens.models import PERSONAL

MANAGE_SCOPE = "tokens:manage"
#: The scope a token needs to renew itself (`POST /api/v1/tokens/self/renew`).
RENEW_SELF_SCOPE = "tokens:renew_self"


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
    too. Every other route takes `management_actor`. A console session or an
    administrator's personal token with `tokens:manage` (`management_callers`)."""
    caller = await authenticate(request, ip_of(request), management_callers(request))
    verdict = caller.verdict
    if verdict is None:
        return caller.actor
    if verdict.kind != PERSONAL or verdict.owner_id is None:
        raise PermissionDenied(
            "The management API needs a personal token of an administrator.",
            "Create a personal token with the tokens:manage scope as an administrator.")
    if request.method not in SAFE_METHODS:
        await run_in_threadpool(runtime_of(request).tokens.require_current_secret,
                                caller.actor)
    return caller.actor


def session_callers(request: Request) -> SessionAuthenticator:
    """Console sessions (the cookie, and the CSRF header on a change), one per app."""
    found: SessionAuthenticator | None = getattr(request.app.state, "session_callers", None)
    if found is None:
        found = SessionAuthenticator(runtime_of(request).sessions.find_any,
                                     cookie=SESSION_COOKIE, csrf_header=CSRF_HEADER)
        request.app.state.session_callers = found
    return found


def management_callers(request: Request) -> tuple[SessionAuthenticator, TokenAuthenticator]:
    """Who may call the management API, in order: a console session, else a token with
    `tokens:manage` (one pair per app)."""
    found: tuple[SessionAuthenticator, TokenAuthenticator] | None = getattr(
        request.app.state, "management_callers", None)
    if found is None:
        found = (session_callers(request),
                 TokenAuthenticator(verifier_of(request), (MANAGE_SCOPE,),
                                    runtime_of(request).settings.trusted_proxy_networks,
                                    via="api"))
        request.app.state.management_callers = found
    return found


def self_renewers(request: Request) -> TokenAuthenticator:
    """A token renewing itself: authenticated by that token alone, which needs
    `tokens:renew_self` (one per app)."""
    found: TokenAuthenticator | None = getattr(request.app.state, "self_renewers", None)
    if found is None:
        found = TokenAuthenticator(verifier_of(request), (RENEW_SELF_SCOPE,),
                                   runtime_of(request).settings.trusted_proxy_networks,
                                   via="self-renew")
        request.app.state.self_renewers = found
    return found


ManagementActor = Annotated[Actor, Depends(management_actor)]
#: A person's own sign-in only (see `own_actor`): never for a change to the account.
OwnActor = Annotated[Actor, Depends(own_actor)]
RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
