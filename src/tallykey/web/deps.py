"""Request dependencies every HTTP surface shares (the management API and the console):
the runtime and verifier an app serves, the client's address (one rule: the trusted
proxies), whether the request came over HTTPS, the cookie flags and the one way a
sign-in opens a session, failed sign-ins per network, and the console session's
authenticator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request, Response

from tallykey.accounts.models import User
from tallykey.accounts.sign_in import NETWORK_FAILURES_PER_MINUTE
from tallykey.actor import Actor
from tallykey.audit import trail
from tallykey.auth.caller import SessionAuthenticator
from tallykey.auth.verifier import Verifier
from tallykey.network.client_ip import scope_client_ip, served_over_https
from tallykey.network.throttle import FailureThrottle
from tallykey.people.sessions import CSRF_HEADER, SESSION_COOKIE, SESSION_LIFETIME, OpenSession
from tallykey.runtime import Runtime


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def verifier_of(request: Request) -> Verifier:
    verifier: Verifier = request.app.state.verifier
    return verifier


def login_limiter(request: Request) -> FailureThrottle:
    """Failed sign-ins per client network and minute, shared by the console form and the
    session API (one limiter per app), so neither is a way around the other."""
    limiter: FailureThrottle | None = getattr(request.app.state, "login_limiter", None)
    if limiter is None:
        limiter = FailureThrottle(NETWORK_FAILURES_PER_MINUTE)
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


def session_callers(request: Request) -> SessionAuthenticator:
    """Console sessions (the cookie, and the CSRF header on a change), one per app."""
    found: SessionAuthenticator | None = getattr(request.app.state, "session_callers", None)
    if found is None:
        found = SessionAuthenticator(runtime_of(request).sessions.find_any,
                                     cookie=SESSION_COOKIE, csrf_header=CSRF_HEADER)
        request.app.state.session_callers = found
    return found
