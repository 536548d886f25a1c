"""Who is calling: the one place a request's credential is read and a refusal answered.

Every surface that takes a token reads it here: the middleware and `TallykeyAuth`,
`/auth/request`, the management API and a token renewing itself (`presented`); the
management API's two kinds of caller are two authenticators, in the shape of Django REST
framework's (`SessionAuthenticator`, a console session with its CSRF token;
`TokenAuthenticator`, a token with the scopes a route needs): each says `None` when the
request does not carry its kind of credential, raises when it carries one that fails,
and else names the caller. A refusal is one exception (`TallykeyRefused`) and one
response (`RefusalResponse`), whichever surface refuses.

The plaintext token lives only in the call that verifies it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tallykey.accounts.console_sessions import csrf_matches
from tallykey.accounts.models import User
from tallykey.actor import Actor
from tallykey.auth.header import extract_token, missing_header, token_headers_present
from tallykey.auth.verdict import Verdict
from tallykey.auth.verifier import Verifier
from tallykey.errors import MalformedHeader, PermissionDenied, TallykeyError, Unauthenticated
from tallykey.network.client_ip import IpNetwork, scope_client_ip
from tallykey.tokens.format import hash_token

#: `scope["state"]` key naming the token that authenticated a request (for request logs).
TOKEN_ID_STATE = "tallykey_token_id"  # noqa: S105 - a state key
#: The response header that repeats a refusal's JSON body, for proxies (`RefusalResponse`).
REFUSAL_HEADER = b"tallykey-refusal"
#: Methods that change nothing: a console session needs no CSRF token for them.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


# --- the credential ---------------------------------------------------------------------


def credentials(headers: Iterable[tuple[bytes, bytes]]) -> tuple[list[bytes], bytes | None]:
    """Every `Authorization` header's value and the `User-Agent`, in one pass."""
    authorizations: list[bytes] = []
    agent = None
    for name, value in headers:
        if name == b"authorization":
            authorizations.append(value)
        elif name == b"user-agent":
            agent = value
    return authorizations, agent


def presented(scope: Scope, authorizations: list[bytes]) -> str | Verdict | None:
    """The credential a request presents: its one `Authorization` header, `None` when it
    sends none, or the refusal of a credential sent where none belongs: in the URL, in
    two `Authorization` headers, or in a header such as `X-API-Key` that other APIs
    read. `authorizations` are the request's `Authorization` values (`credentials`)."""
    query = scope.get("query_string")
    if query:
        in_url = token_in_url(query)
        if in_url is not None:
            return in_url
    if len(authorizations) == 1:
        return authorizations[0].decode("latin-1")
    if authorizations:
        return Verdict.refused(MalformedHeader(
            "More than one Authorization header was sent.", "Send exactly one."))
    elsewhere = misplaced_token_headers(scope)
    if elsewhere:
        return Verdict.refused(missing_header(elsewhere))
    return None


def header_credential(request: Request) -> str | None:
    """`presented` for a route: the request's one `Authorization` header, or None; a
    credential sent where none belongs raises `TallykeyRefused`. For the credentials
    that are not tokens as well (an operator token, the metrics scrape credential), so
    every surface reads its credential the same way."""
    scope = request.scope
    credential = presented(scope, credentials(scope["headers"])[0])
    if isinstance(credential, Verdict):
        raise TallykeyRefused(credential)
    return credential


def token_in_url(query_string: bytes) -> Verdict | None:
    """RFC 6750 §2.3 allows `?access_token=`; tallykey refuses it, and any tallykey token
    in a query string: URLs end up in logs, proxies and browser history."""
    if not query_string or (b"_" not in query_string and b"%" not in query_string):
        return None  # (both names hold a "_", or an escaped one: most queries end here)
    if b"%" not in query_string:
        lowered = query_string.lower()  # ?ACCESS_TOKEN= is the same parameter
        if b"access_token" not in lowered and b"tlk_" not in query_string:
            return None
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key.lower() == "access_token" or value.startswith("tlk_"):
            return Verdict.refused(MalformedHeader(
                "Tokens are accepted only in the Authorization header, never in a URL.",
                "Remove the token from the URL (it may now be in logs: rotate it) and send "
                "Authorization: Bearer <token>."))
    return None


def misplaced_token_headers(scope: Scope) -> list[str]:
    """Headers such as `X-API-Key` that other APIs read a token from (looked for only when
    the Authorization header is absent, so the hot path never pays for it)."""
    return token_headers_present([name.decode("latin-1") for name, _ in scope["headers"]])


# --- verifying it -------------------------------------------------------------------------


async def verify_scope(verifier: Verifier, scope: Scope, required_scopes: Iterable[str],
                       trusted: Sequence[IpNetwork], workspace: str | None = None,
                       cost: int = 1, path: str | None = None) -> Verdict:
    """Verify the request described by an ASGI scope, for `workspace` if it names one;
    `cost` is what it spends of the token's usage credits."""
    authorizations, agent = credentials(scope["headers"])
    verdict = credentials_verdict(verifier, scope, authorizations, agent, required_scopes,
                                  trusted, workspace, cost, path)
    return verdict if isinstance(verdict, Verdict) else await verdict


def credentials_verdict(verifier: Verifier, scope: Scope, authorizations: list[bytes],
                        agent: bytes | None, required_scopes: Iterable[str],
                        trusted: Sequence[IpNetwork], workspace: str | None = None,
                        cost: int = 1, path: str | None = None
                        ) -> Verdict | Coroutine[Any, Any, Verdict]:
    """`verify_scope` once the request's headers were read (`credentials`), for a caller
    on the hot path: the verdict itself when it needs no I/O (a refusal of the request's
    form, or a cached token), else the coroutine that finds it, to be awaited. A cached
    token costs no coroutine at all. `path` (default: the request's) is what a decoy's
    alert names."""
    query = scope.get("query_string")
    if len(authorizations) == 1 and (not query or token_in_url(query) is None):
        authorization: str | None = authorizations[0].decode("latin-1")  # `presented`, inline
    else:
        found = presented(scope, authorizations)
        if isinstance(found, Verdict):
            return found
        authorization = found
    ip = scope_client_ip(scope, trusted)
    user_agent = None if agent is None else agent.decode("latin-1")
    verdict = verifier.verify_cached(authorization, ip, required_scopes, user_agent, workspace,
                                     cost)
    if verdict is None:
        return _verify_further(verifier, scope, authorization, ip, required_scopes,
                               user_agent, workspace, cost, path)
    token_id = verdict.token_id
    if token_id is not None:  # `_note_token`, inline
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state[TOKEN_ID_STATE] = token_id
    return verdict


async def _verify_further(verifier: Verifier, scope: Scope, authorization: str | None,
                          ip: str, required_scopes: Iterable[str], user_agent: str | None,
                          workspace: str | None, cost: int, path: str | None) -> Verdict:
    """The full path, for what the cache could not answer (`credentials_verdict`)."""
    verdict = await verifier.averify(authorization, ip, required_scopes, user_agent,
                                     workspace, cost, path or scope.get("path"))
    if verdict.token_id is not None:
        _note_token(scope, verdict.token_id)
    return verdict


def _note_token(scope: Scope, token_id: str) -> None:
    """Name the token that authenticated the request in its state (for request logs)."""
    state = scope.get("state")
    if state is None:
        state = scope["state"] = {}
    state[TOKEN_ID_STATE] = token_id


# --- refusing -----------------------------------------------------------------------------


class TallykeyRefused(Exception):
    """A request whose credential did not pass, raised wherever a route or dependency
    refuses one (`TallykeyAuth`, the management API); answered by `RefusalResponse`:
    the same JSON body, status and RFC 6750 challenge as `TallykeyMiddleware` (no
    FastAPI `{"detail": …}` wrapper)."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.message)
        self.verdict = verdict


class RefusalResponse(Response):
    """The answer to a refused credential, on every surface: the verdict's status, its
    headers (RFC 6750 challenge, `Tallykey-Reason`, `Retry-After`), `extra` headers and
    the JSON error body. `body_in_header` repeats the body in a `Tallykey-Refusal`
    header, for a proxy that cannot pass the body on (nginx `auth_request`). JSON with
    `ensure_ascii` is one line of printable ASCII, so it is a valid header value
    whatever the message says. Plain ASGI code awaits it as an app:
    `await RefusalResponse(verdict)(scope, receive, send)`."""

    media_type = "application/json"

    def __init__(self, verdict: Verdict, extra: Iterable[tuple[bytes, bytes]] = (),
                 body_in_header: bool = False) -> None:
        self.status_code = verdict.status
        self.background = None
        self.body = body = json.dumps(verdict.body()).encode()
        headers = [(k.lower().encode(), v.encode()) for k, v in verdict.headers().items()]
        headers += [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()), *extra]
        if body_in_header:
            headers.append((REFUSAL_HEADER, body))
        self.raw_headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body})


async def answer_refusal(_: Request, error: Exception) -> Response:
    """The exception handler for `TallykeyRefused`."""
    assert isinstance(error, TallykeyRefused)
    return RefusalResponse(error.verdict)


# --- the management API's callers -------------------------------------------------------


class CallerSession(Protocol):
    """What a console session tells about its caller (`people.sessions.OpenSession`)."""

    @property
    def user(self) -> User: ...

    @property
    def awaiting(self) -> str | None: ...

    @property
    def csrf_token(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling and by what: a console `session`, or a token (its allowed
    `verdict`; the actor carries the token's digest)."""

    actor: Actor
    session: CallerSession | None = None
    verdict: Verdict | None = None


def presented_digest(authorization: str | None) -> str | None:
    """The stored hash of the token an allowed `Authorization` header carries (so the
    token service can tell a current secret from one in its grace period)."""
    try:
        return hash_token(extract_token(authorization))
    except (TallykeyError, UnicodeError):
        return None


class SessionAuthenticator:
    """A console session (its cookie), on a request without an `Authorization` header;
    a method that changes something also needs the session's CSRF token in `csrf_header`.
    `find` is the session store's look-up (a session still awaiting its second factor
    included); it runs off the event loop."""

    def __init__(self, find: Callable[[str], CallerSession | None], *, cookie: str,
                 csrf_header: str) -> None:
        self.find = find
        self.cookie = cookie
        self.csrf_header = csrf_header

    async def session(self, request: Request) -> CallerSession | None:
        """The request's session, complete or awaiting a second factor, or None."""
        cookie = request.cookies.get(self.cookie)
        if not cookie:
            return None
        return await run_in_threadpool(self.find, cookie)

    async def authenticate(self, request: Request, ip: str) -> Caller | None:
        if "authorization" in request.headers or not request.cookies.get(self.cookie):
            return None
        session = await self.session(request)
        if session is None:
            raise Unauthenticated("Your console session has expired or was signed out.",
                                  "Sign in again.")
        if session.awaiting is not None:
            raise Unauthenticated("This sign-in still needs its second factor.",
                                  "Send the authenticator code to POST "
                                  "/api/v1/session/second-factor.",
                                  awaiting=session.awaiting)
        if request.method not in SAFE_METHODS and not csrf_matches(
                session, request.headers.get(self.csrf_header)):
            raise PermissionDenied("The CSRF token is missing or wrong.",
                                   f"Send the session's CSRF token in the "
                                   f"{self.csrf_header} header.", reason="csrf")
        user = session.user
        return Caller(Actor(user.account_id, user.id, user.role, user.email, ip, "console"),
                      session=session)


class TokenAuthenticator:
    """A token in the `Authorization` header (read by `presented`) that holds
    `required_scopes`; anything else is refused (`TallykeyRefused`), a request without
    any credential included, with the RFC 6750 challenge. The caller it names acts as the
    token's owner, through `via`; what the route needs of the token beyond its scopes
    (a personal token, an administrator's) is the route's to check."""

    def __init__(self, verifier: Verifier, required_scopes: Iterable[str], *,
                 via: str) -> None:
        self.verifier = verifier
        self.required_scopes = tuple(required_scopes)
        self.via = via

    async def authenticate(self, request: Request, ip: str) -> Caller:
        scope = request.scope
        authorization = header_credential(request)
        verdict = await self.verifier.averify(
            authorization, ip, self.required_scopes, request.headers.get("user-agent"),
            path=scope["path"])
        if verdict.token_id is not None:
            _note_token(scope, verdict.token_id)
        if not verdict.allowed:
            raise TallykeyRefused(verdict)
        if verdict.account_id is None:  # (an allowed verdict always names its account)
            raise PermissionDenied("This token belongs to no account.",
                                   "Use a token created in an account.")
        actor = Actor(verdict.account_id, verdict.owner_id, "admin",
                      verdict.owner_email or "", ip, self.via,
                      token_digest=presented_digest(authorization))
        return Caller(actor, verdict=verdict)


async def authenticate(request: Request, ip: str,
                       authenticators: Sequence[SessionAuthenticator | TokenAuthenticator]
                       ) -> Caller:
    """The caller, by the first authenticator that recognises the request's credential
    (a token in the URL is refused first, whatever else the request carries)."""
    in_url = token_in_url(request.scope.get("query_string", b""))
    if in_url is not None:
        raise TallykeyRefused(in_url)
    for authenticator in authenticators:
        caller = await authenticator.authenticate(request, ip)
        if caller is not None:
            return caller
    raise TallykeyRefused(Verdict.refused(missing_header([])))
