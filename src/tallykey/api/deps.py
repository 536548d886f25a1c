"""Who is calling the management API (a console session with CSRF protection, or an
administrator's management token), as route dependencies; what every HTTP surface
shares (the runtime, the client's address, sessions) is `tallykey.web.deps`.

Every route that changes something takes `ManagementActor`, which refuses an auditor
(403, reason `auditor_read_only`) on every method but GET/HEAD/OPTIONS: a new write route
is covered by taking it. Only a person's own sign-in (their password, their sessions,
signing out) takes `OwnActor` instead, which any role may use."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from tallykey.actor import Actor
from tallykey.auth.caller import (
    SAFE_METHODS,
    SessionAuthenticator,
    TokenAuthenticator,
    authenticate,
)
from tallykey.errors import PermissionDenied, ReadOnlyRole
from tallykey.runtime import Runtime
from tallykey.tokens.models import PERSONAL
from tallykey.web.deps import ip_of, runtime_of, session_callers, verifier_of

MANAGE_SCOPE = "tokens:manage"
#: The scope a token needs to renew itself (`POST /api/v1/tokens/self/renew`).
RENEW_SELF_SCOPE = "tokens:renew_self"


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


def management_callers(request: Request) -> tuple[SessionAuthenticator, TokenAuthenticator]:
    """Who may call the management API, in order: a console session, else a token with
    `tokens:manage` (one pair per app)."""
    found: tuple[SessionAuthenticator, TokenAuthenticator] | None = getattr(
        request.app.state, "management_callers", None)
    if found is None:
        found = (session_callers(request),
                 TokenAuthenticator(verifier_of(request), (MANAGE_SCOPE,), via="api"))
        request.app.state.management_callers = found
    return found


def self_renewers(request: Request) -> TokenAuthenticator:
    """A token renewing itself: authenticated by that token alone, which needs
    `tokens:renew_self` (one per app)."""
    found: TokenAuthenticator | None = getattr(request.app.state, "self_renewers", None)
    if found is None:
        found = TokenAuthenticator(verifier_of(request), (RENEW_SELF_SCOPE,), via="self-renew")
        request.app.state.self_renewers = found
    return found


ManagementActor = Annotated[Actor, Depends(management_actor)]
#: A person's own sign-in only (see `own_actor`): never for a change to the account.
OwnActor = Annotated[Actor, Depends(own_actor)]
RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
