"""The client SDK (SPEC §15): verify tokens, manage them, and link an integration.

    from tallykey.client import Client, ConnectFailed

    with Client(base_url="https://tokens.example.com", token=admin_token) as tk:
        verdict = tk.verify(secret, scopes=["orders:read"])   # POST /api/v1/verify
        if not verdict.valid:
            print(verdict.reason, verdict.message, verdict.hint)
        issued = tk.tokens.create(name="ci", scopes=["orders:read"], expires_in_days=30)
        tk.tokens.rotate(issued["id"], grace_seconds=0)
        info = tk.connect()                                   # GET /core/v3/info

`AsyncClient` is the same with `async with` / `await`. The base URL is `base_url`, or the
token's region resolved through the deployment's region map
(`TALLYKEY_REGIONS=eu1=https://…,us1=https://…`). The token is checked offline first
(checksum, shape, region), so a truncated copy or a token of another region is reported
without a network call. `verify()` needs no token of the client's own.

Every failure is one exception of the `ConnectFailed` hierarchy below, whose message is the
fix ("copied incompletely", "belongs to region us1: https://…", "expired at …"). Each class
also carries the exit code `tallykey connect` uses for it. Messages never contain the token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar
from urllib.parse import quote, urlsplit

import httpx

from tallykey.errors import TokenFormatError
from tallykey.regions import local_region_map
from tallykey.tokens.format import parse

INFO_PATH = "/core/v3/info"
VERIFY_PATH = "/api/v1/verify"
TOKENS_PATH = "/api/v1/tokens"
IDENTITIES_PATH = "/api/v1/identities"
USER_AGENT = "tallykey-client/0.2"
DEFAULT_TIMEOUT = 10.0


# --- the exception hierarchy ---------------------------------------------------------------


class ConnectFailed(Exception):
    """Base of every client error: `message` says what happened, `hint` what to do."""

    exit_code: ClassVar[int] = 1
    code: ClassVar[str] = "connect_failed"

    def __init__(self, message: str, hint: str = "", *, url: str | None = None,
                 status: int | None = None, **details: Any) -> None:
        super().__init__(f"{message} {hint}".strip())
        self.message = message
        self.hint = hint
        self.url = url
        self.status = status
        self.details = details

    @classmethod
    def of(cls, message: str, hint: str, facts: Mapping[str, Any], **common: Any) -> Self:
        """This error from a server's refusal: its message, hint and body (`facts`)."""
        return cls(message, hint, **common)

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": False, "error": self.code, "message": self.message}
        if self.hint:
            body["hint"] = self.hint
        if self.url:
            body["url"] = self.url
        if self.status is not None:
            body["status"] = self.status
        body.update(self.details)
        return body


class ClientMisconfigured(ConnectFailed):
    """The client cannot even try: unknown region, malformed base URL, bad region map."""

    exit_code = 10
    code = "misconfigured"


class TokenRejected(ConnectFailed):
    """The token itself is not usable; subclasses say why."""

    exit_code = 20
    code = "token_rejected"


class TokenMalformed(TokenRejected):
    """Offline check failed (checksum, length, characters): copied incompletely or altered."""

    exit_code = 21
    code = "token_malformed"


class WrongRegion(TokenRejected):
    """The token belongs to another region; `region` and (if known) `base_url` name it."""

    exit_code = 22
    code = "wrong_region"

    def __init__(self, message: str, hint: str = "", *, region: str,
                 base_url: str | None = None, **kwargs: Any) -> None:
        if base_url:
            kwargs["base_url"] = base_url
        super().__init__(message, hint, region=region, **kwargs)
        self.region = region
        self.base_url = base_url

    @classmethod
    def of(cls, message: str, hint: str, facts: Mapping[str, Any], **common: Any) -> Self:
        return cls(message, hint, region=str(facts.get("region", "")),
                   base_url=facts.get("base_url"), **common)


class TokenNotRecognised(TokenRejected):
    """Well formed, right region, but unknown here: deleted, or from another deployment."""

    exit_code = 23
    code = "token_not_recognised"


class TokenRevoked(TokenRejected):
    exit_code = 24
    code = "token_revoked"

    def __init__(self, message: str, hint: str = "", *, revoked_at: datetime | None,
                 **kwargs: Any) -> None:
        super().__init__(message, hint, **kwargs)
        self.revoked_at = revoked_at

    @classmethod
    def of(cls, message: str, hint: str, facts: Mapping[str, Any], **common: Any) -> Self:
        return cls(message, hint, revoked_at=_when(facts.get("revoked_at")), **common)


class TokenExpired(TokenRejected):
    exit_code = 25
    code = "token_expired"

    def __init__(self, message: str, hint: str = "", *, expired_at: datetime | None,
                 **kwargs: Any) -> None:
        super().__init__(message, hint, **kwargs)
        self.expired_at = expired_at

    @classmethod
    def of(cls, message: str, hint: str, facts: Mapping[str, Any], **common: Any) -> Self:
        return cls(message, hint, expired_at=_when(facts.get("expired_at")), **common)


class TokenOwnerInactive(TokenRejected):
    exit_code = 26
    code = "owner_inactive"


class TokenUnusable(TokenRejected):
    """Known and valid, but stopped for now or for good by something other than its own
    state: its account was suspended or its workspace archived."""

    exit_code = 27
    code = "token_unusable"


class TokenSuspended(TokenRejected):
    """Suspended by an administrator of its account: it works again once resumed."""

    exit_code = 28
    code = "token_suspended"


class TokenPending(TokenRejected):
    """Awaiting an administrator's approval (account policy `token_approval`): it works
    once approved."""

    exit_code = 33
    code = "token_pending"


class TokenMissing(TokenRejected):
    """No token was sent at all (an empty secret, or a request without credentials)."""

    exit_code = 29
    code = "token_missing"


class AccessDenied(ConnectFailed):
    """The token is valid but this request may not use it (403)."""

    exit_code = 30
    code = "access_denied"


class IpNotAllowed(AccessDenied):
    """The caller's address (`ip`, as the server saw it) is not in the allow-list."""

    exit_code = 31
    code = "ip_not_allowed"

    def __init__(self, message: str, hint: str = "", *, ip: str | None, **kwargs: Any) -> None:
        super().__init__(message, hint, ip=ip, **kwargs)
        self.ip = ip

    @classmethod
    def of(cls, message: str, hint: str, facts: Mapping[str, Any], **common: Any) -> Self:
        ip = facts.get("ip")
        return cls(message, hint, ip=str(ip) if ip is not None else None, **common)


class ScopeMissing(AccessDenied):
    exit_code = 32
    code = "scope_missing"

    def __init__(self, message: str, hint: str = "", *, scopes: list[str],
                 **kwargs: Any) -> None:
        super().__init__(message, hint, missing_scopes=scopes, **kwargs)
        self.scopes = scopes

    @classmethod
    def of(cls, message: str, hint: str, facts: Mapping[str, Any], **common: Any) -> Self:
        scope = facts.get("scope")
        return cls(message, hint, scopes=str(scope).split() if scope else [], **common)


class RateLimited(ConnectFailed):
    exit_code = 40
    code = "rate_limited"

    def __init__(self, message: str, hint: str = "", *, retry_after: int | None,
                 **kwargs: Any) -> None:
        super().__init__(message, hint, retry_after=retry_after, **kwargs)
        self.retry_after = retry_after

    @classmethod
    def of(cls, message: str, hint: str, facts: Mapping[str, Any], **common: Any) -> Self:
        seconds = str(facts.get("retry_after") or "")
        return cls(message, hint, retry_after=int(seconds) if seconds.isdigit() else None,
                   **common)


class ServerUnreachable(ConnectFailed):
    """No HTTP answer at all (DNS, refused, TLS, timeout); `url` is what was tried."""

    exit_code = 50
    code = "server_unreachable"


class UsageExhausted(RateLimited):
    """The token's usage credits are spent; `retry_after` says when they refill (if ever)."""

    exit_code = 41
    code = "usage_exhausted"


class ServiceUnavailable(RateLimited):
    """The server answered but cannot check tokens right now (its store is down);
    `retry_after` says when to try again."""

    exit_code = 52
    code = "service_unavailable"


class RequestRejected(ConnectFailed):
    """The server refused what a management call asked, not its token: an unknown id
    (404), a change the token's state forbids (409), invalid fields (400, 422). `error`
    is the server's code (`not_found`, `conflict`, `validation_failed`, …)."""

    exit_code = 60
    code = "request_rejected"

    def __init__(self, message: str, hint: str = "", *, error: str = "",
                 **kwargs: Any) -> None:
        super().__init__(message, hint, **({"error_code": error} | kwargs))
        self.error = error

    @classmethod
    def of(cls, message: str, hint: str, facts: Mapping[str, Any], **common: Any) -> Self:
        return cls(message, hint, error=str(facts.get("error", "")), **common)


class UnexpectedResponse(ConnectFailed):
    """An answer that is not tallykey's: wrong base URL, a proxy's error page, a 5xx."""

    exit_code = 51
    code = "unexpected_response"


#: The server's refusal reasons (`reason` in every error body; `tallykey.errors`) and the
#: exception each one becomes. A reason not listed here falls back to the HTTP status.
#: The TypeScript client's `REASONS` table (clients/typescript) maps every reason to the
#: same word (its `kind`, this table's exception `code`); a test compares both with the
#: server's reasons.
REFUSALS: dict[str, type[ConnectFailed]] = {
    "missing": TokenMissing,
    "malformed": TokenMalformed,
    "malformed_header": TokenMalformed,
    "invalid_cost": RequestRejected,
    "wrong_region": WrongRegion,
    "unknown": TokenNotRecognised,
    "rotated_out": TokenNotRecognised,
    "revoked": TokenRevoked,
    "expired": TokenExpired,
    "owner_inactive": TokenOwnerInactive,
    "suspended": TokenSuspended,
    "token_pending": TokenPending,
    "account_suspended": TokenUnusable,
    "workspace_archived": TokenUnusable,
    "ip_not_allowed": IpNotAllowed,
    "insufficient_scope": ScopeMissing,
    "workspace_not_allowed": AccessDenied,
    "too_many_attempts": RateLimited,
    "rate_limited": RateLimited,
    "usage_exhausted": UsageExhausted,
    "store_unavailable": ServiceUnavailable,
    # an operation the platform's OpenAPI document does not list (TALLYKEY_OPENAPI_FILE)
    "unknown_operation": RequestRejected,
}


# --- the answer ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountInfo:
    id: str
    slug: str
    name: str
    region: str


@dataclass(frozen=True)
class UserInfo:
    id: str
    email: str | None


@dataclass(frozen=True)
class ConnectionInfo:
    """What `/core/v3/info` says about the token: whose it is and what it may do."""

    base_url: str
    account: AccountInfo
    token_id: str
    kind: str
    scopes: tuple[str, ...]
    expires_at: datetime
    user: UserInfo | None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["scopes"] = list(self.scopes)
        data["expires_at"] = self.expires_at.isoformat()
        return {"ok": True, **data}


@dataclass(frozen=True)
class Verification:
    """The verdict of `verify()` (`POST /api/v1/verify`): `valid`, and either who the token
    is (`token_id`, `name`, `kind`, `scopes`, `workspaces`, `expires_at`, `external_id`,
    `metadata`) or why it was refused (`reason`, `message`, `hint`, `retry_after`).
    `status` is what the calling service should answer its own client."""

    valid: bool
    status: int
    reason: str | None = None
    message: str | None = None
    hint: str | None = None
    error: str | None = None
    token_id: str | None = None
    name: str | None = None
    account: str | None = None
    kind: str | None = None
    scopes: tuple[str, ...] = ()
    workspaces: dict[str, tuple[str, ...]] = field(default_factory=dict)
    workspace: str | None = None
    expires_at: datetime | None = None
    external_id: str | None = None
    metadata: dict[str, Any] | None = None
    retry_after: int | None = None
    credits_remaining: int | None = None
    rate_limits: tuple[dict[str, Any], ...] = ()

    def __bool__(self) -> bool:
        return self.valid

    def exception(self, url: str = "") -> ConnectFailed | None:
        """A refusal as the exception of the reason table (`REFUSALS`); None if valid."""
        if self.valid:
            return None
        body = {"error": self.error or "", "message": self.message or "",
                "reason": self.reason or "", "hint": self.hint or "",
                "retry_after": self.retry_after}
        return refusal(self.status, body, url)


# --- the pure parts shared by both clients -------------------------------------------------


@dataclass(frozen=True)
class _Target:
    base_url: str
    region: str | None


def region_map() -> dict[str, str]:
    """This machine's `TALLYKEY_REGIONS`, the same mapping the server uses, plus the URL a
    local `tallykey demo` registered in this machine's data dir (for regions not named)."""
    try:
        return local_region_map()
    except ValueError as error:
        raise ClientMisconfigured(f"The TALLYKEY_* settings cannot be read: {error}",
                                  "Write TALLYKEY_REGIONS as eu1=https://…,us1=https://….",
                                  ) from None


def resolve(token: str, region: str | None, base_url: str | None,
            regions: Mapping[str, str] | None) -> _Target:
    """Check the token offline and pick the base URL; raise the precise error otherwise."""
    try:
        parsed = parse(token)
    except TokenFormatError as error:
        raise TokenMalformed(error.message, error.hint, problem=error.problem) from None
    known = dict(region_map() if regions is None else regions)
    region = region.strip().lower() if region is not None and region.strip() else None
    if region is not None and parsed.region != region:
        right = known.get(parsed.region)
        where = (f"its API base URL is {right}" if right
                 else "its API base URL is not in this region map (TALLYKEY_REGIONS)")
        raise WrongRegion(
            f"This token belongs to region {parsed.region!r}, not {region!r}.",
            f"Connect to region {parsed.region} instead: {where}.",
            region=parsed.region, base_url=right)
    if base_url is not None:
        return _Target(_checked_base_url(base_url), region or parsed.region)
    region = region or parsed.region
    if region not in known:
        listed = ", ".join(sorted(known)) or "none configured"
        raise ClientMisconfigured(
            f"Region {region!r} has no known API base URL (known regions: {listed}).",
            "Set TALLYKEY_REGIONS (e.g. eu1=https://api-eu1.example.com) or pass the base URL.",
            region=region)
    return _Target(_checked_base_url(known[region]), region)


def _checked_base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientMisconfigured(f"The base URL {url!r} is not an http(s) URL.",
                                  "Pass it as https://host[:port].")
    return url


def _when(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def _json_body(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def interpret(response: httpx.Response, base_url: str,
              required_scopes: Iterable[str] = ()) -> ConnectionInfo:
    """Turn the `/core/v3/info` answer into `ConnectionInfo` or the matching error."""
    url = str(response.request.url)
    body = _json_body(response)
    if response.status_code == 200 and body is not None:
        info = _connection(body, base_url, url)
        missing = sorted(set(required_scopes) - set(info.scopes))
        if missing:
            raise ScopeMissing(
                f"The token lacks the scope(s) {', '.join(missing)}.",
                "Create a token with these scopes (its owner must hold them too).",
                scopes=missing, url=url, status=200)
        return info
    if body is None or "error" not in body or "message" not in body:
        hint = ("Is this the API base URL of the region? It should answer "
                f"{INFO_PATH} with JSON.")
        if response.status_code >= 500:
            hint = "The server failed; try again later, or tell the platform's operators."
        raise UnexpectedResponse(
            f"GET {url} answered HTTP {response.status_code}, not a tallykey answer.",
            hint, url=url, status=response.status_code)
    raise refusal(response.status_code, body, url,
                  response.headers.get("retry-after"), CONNECT_BY_STATUS)


def refusal(status: int, body: Mapping[str, Any], url: str,
            retry_after: str | None = None,
            by_status: Mapping[int, type[ConnectFailed]] | None = None) -> ConnectFailed:
    """Map a server's JSON error body (`{"error", "message", "reason", "hint", …}`) to an
    exception: by its `reason` through `REFUSALS`, else by the HTTP status (`BY_STATUS`,
    or `by_status`)."""
    message = str(body.get("message", "")) or f"The server refused the token (HTTP {status})."
    hint = str(body.get("hint", ""))
    kind = REFUSALS.get(str(body.get("reason", "")))
    if kind is None:
        kind = (BY_STATUS if by_status is None else by_status).get(status, UnexpectedResponse)
    facts = {**body, "retry_after": body.get("retry_after") or retry_after}
    return kind.of(message, hint, facts, url=url, status=status)


#: A refusal without a known reason (a management error: `not_found`, `conflict`, …).
BY_STATUS: dict[int, type[ConnectFailed]] = {
    400: RequestRejected, 401: TokenNotRecognised, 403: AccessDenied, 404: RequestRejected,
    409: RequestRejected, 413: RequestRejected, 415: RequestRejected, 422: RequestRejected,
    429: RateLimited, 503: ServiceUnavailable}
#: For `connect()`, whose one call has no id or body to reject: any other status means the
#: base URL is not a tallykey region's.
CONNECT_BY_STATUS: dict[int, type[ConnectFailed]] = {
    401: TokenNotRecognised, 403: AccessDenied, 429: RateLimited}


def _connection(body: Mapping[str, Any], base_url: str, url: str) -> ConnectionInfo:
    try:
        account, token, user = body["account"], body["token"], body.get("user")
        expires_at = datetime.fromisoformat(token["expires_at"])
        return ConnectionInfo(
            base_url=base_url,
            account=AccountInfo(id=str(account["id"]), slug=str(account["slug"]),
                                name=str(account["name"]), region=str(account["region"])),
            token_id=str(token["id"]), kind=str(token["kind"]),
            scopes=tuple(str(s) for s in token["scopes"]), expires_at=expires_at,
            user=UserInfo(id=str(user["id"]), email=user.get("email")) if user else None)
    except (KeyError, TypeError, ValueError):
        raise UnexpectedResponse(f"GET {url} answered 200 but not with tallykey's info.",
                                 "Is this the API base URL of the region?", url=url,
                                 status=200) from None


def unreachable(error: httpx.TransportError, url: str) -> ServerUnreachable:
    what = "timed out" if isinstance(error, httpx.TimeoutException) else (
        f"failed ({error.__class__.__name__}: {error})" if str(error)
        else f"failed ({error.__class__.__name__})")
    return ServerUnreachable(
        f"Could not reach {url}: the connection {what}.",
        "Check the region (or base URL), your network, proxy and firewall.", url=url)


# --- the clients ---------------------------------------------------------------------------


def verify_body(secret: str | None, scopes: Iterable[str] | None, workspace: str | None,
                cost: int | None, client_ip: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"token": secret} if secret else {}  # none: `missing`
    if isinstance(scopes, str):
        scopes = [scopes]
    if scopes:
        body["required_scopes"] = list(scopes)
    if workspace:
        body["workspace"] = workspace
    if cost is not None:
        body["cost"] = cost
    if client_ip:
        body["client_ip"] = client_ip
    return body


#: The longest Authorization header tallykey reads (`auth.header.MAX_CREDENTIALS_LENGTH`).
MAX_AUTHORIZATION_LENGTH = 1024


def overlong(secret: str | None) -> Verification | None:
    """tallykey's own verdict for a secret too long to be a token, without a request:
    `POST /api/v1/verify` refuses the request itself (422) above 4096 characters."""
    if not secret or len(secret) + len("Bearer ") <= MAX_AUTHORIZATION_LENGTH:
        return None
    return Verification(
        valid=False, status=400, reason="malformed_header", error="invalid_request",
        message=(f"The Authorization header is {len(secret) + len('Bearer ')} characters "
                 "long; a tallykey token is far shorter."),
        hint=("Expected exactly: Authorization: Bearer <token>, or Authorization: Basic "
              "<token> or Basic base64(<username>:<password>)."))


def verification(response: httpx.Response) -> Verification:
    """The `POST /api/v1/verify` answer as a `Verification`, or the error it is."""
    body = answer(response)
    try:
        return Verification(
            valid=bool(body["allowed"]), status=int(body["status"]),
            reason=body.get("reason"), message=body.get("message"), hint=body.get("hint"),
            error=body.get("error"), token_id=body.get("token_id"), name=body.get("name"),
            account=body.get("account"), kind=body.get("kind"),
            scopes=tuple(body.get("scopes") or ()),
            workspaces={ws: tuple(held) for ws, held in (body.get("workspaces") or {}).items()},
            workspace=body.get("workspace"), expires_at=_when(body.get("expires_at")),
            external_id=body.get("external_id"), metadata=body.get("metadata"),
            retry_after=body.get("retry_after"),
            credits_remaining=body.get("credits_remaining"),
            rate_limits=tuple(body.get("rate_limits") or ()))
    except (KeyError, TypeError, ValueError):
        url = str(response.request.url)
        raise UnexpectedResponse(f"POST {url} answered 200 but not with a verdict.",
                                 "Is this the base URL of a tallykey server?", url=url,
                                 status=200) from None


def answer(response: httpx.Response) -> dict[str, Any]:
    """A management answer's JSON object (2xx), or the matching `ConnectFailed`. A list
    the server answers as a JSON array (identities) comes as `{"items": [...],
    "next_cursor": None}`, the shape of every other list."""
    url = str(response.request.url)
    if response.is_success and response.headers.get("content-type", "").startswith(
            "application/json"):
        try:
            array = response.json()
        except ValueError:
            array = None
        if isinstance(array, list):
            return {"items": array, "next_cursor": None}
    body = _json_body(response)
    if response.is_success and body is not None:
        return body
    if body is None or "error" not in body or "message" not in body:
        hint = "Is this the base URL of a tallykey server? It answers /api/v1/… with JSON."
        if response.status_code >= 500:
            hint = "The server failed; try again later, or tell the platform's operators."
        raise UnexpectedResponse(
            f"{response.request.method} {url} answered HTTP {response.status_code}, "
            "not a tallykey answer.", hint, url=url, status=response.status_code)
    raise refusal(response.status_code, body, url, response.headers.get("retry-after"))


Answer = TypeVar("Answer")


class Tokens(Generic[Answer]):
    """`client.tokens`: the management API's token calls (`/api/v1/tokens`), each with its
    fields as keyword arguments and the server's JSON answer as a dict (with `AsyncClient`,
    awaitables of it). Needs a management token (`tokens:manage`)."""

    def __init__(self, send: Callable[..., Answer]) -> None:
        self._send = send

    def create(self, *, name: str, idempotency_key: str | None = None,
               **fields: Any) -> Answer:
        """A new token; the answer's `token` is its full secret, shown this once."""
        return self._send("POST", TOKENS_PATH, {"name": name, **fields},
                          idempotency_key=idempotency_key)

    def list(self, **filters: Any) -> Answer:
        """One page: `{"items": [...], "next_cursor": …}` (filters: `status`, `search`,
        `kind`, `workspace`, `target`, `external_id`, `limit`, `after`)."""
        params = {k: v for k, v in filters.items() if v is not None}
        return self._send("GET", TOKENS_PATH, params=params)

    def get(self, token_id: str) -> Answer:
        return self._send("GET", _token_path(token_id))

    def update(self, token_id: str, **fields: Any) -> Answer:
        return self._send("PATCH", _token_path(token_id), fields)

    def rotate(self, token_id: str, *, grace_seconds: int | None = None,
               idempotency_key: str | None = None) -> Answer:
        body = {} if grace_seconds is None else {"grace_seconds": grace_seconds}
        return self._send("POST", _token_path(token_id, "rotate"), body,
                          idempotency_key=idempotency_key)

    def renew(self, token_id: str, *, idempotency_key: str | None = None,
              **fields: Any) -> Answer:
        """A successor (`expires_at` or `expires_in_days`, `grace_seconds`)."""
        return self._send("POST", _token_path(token_id, "renew"), fields,
                          idempotency_key=idempotency_key)

    def suspend(self, token_id: str) -> Answer:
        return self._send("POST", _token_path(token_id, "suspend"))

    def resume(self, token_id: str) -> Answer:
        return self._send("POST", _token_path(token_id, "resume"))

    def revoke(self, token_id: str, *, reason: str = "") -> Answer:
        return self._send("POST", _token_path(token_id, "revoke"), {"reason": reason})


    def import_keys(self, keys: Iterable[Mapping[str, Any]]) -> Answer:
        """Import up to 10,000 keys issued before (`{"key": …}` or `{"hash": "sha256:…"}`,
        each with `name` and an expiry): `{"created", "existing", "unavailable", "keys"}`."""
        return self._send("POST", f"{TOKENS_PATH}/import", {"keys": [dict(k) for k in keys]})


class Identities(Generic[Answer]):
    """`client.identities`: the platform's customers or integrations (`/api/v1/identities`,
    SPEC §16), whose tokens share one credit pool and rate limits. Needs an administrator's
    management token."""

    def __init__(self, send: Callable[..., Answer]) -> None:
        self._send = send

    def create(self, *, external_id: str, **fields: Any) -> Answer:
        """`name`, `metadata`, `credits`, `rate_limits` as in the API."""
        return self._send("POST", IDENTITIES_PATH, {"external_id": external_id, **fields})

    def list(self, **filters: Any) -> Answer:
        params = {k: v for k, v in filters.items() if v is not None}
        return self._send("GET", IDENTITIES_PATH, params=params)

    def get(self, identity_id: str) -> Answer:
        return self._send("GET", _identity_path(identity_id))

    def update(self, identity_id: str, **fields: Any) -> Answer:
        """The answer's `propagation` says once every node applies the change."""
        return self._send("PATCH", _identity_path(identity_id), fields)

    def delete(self, identity_id: str, *, detach: bool = False) -> Answer:
        """409 while tokens belong to it, unless `detach` takes them out first."""
        return self._send("DELETE", _identity_path(identity_id),
                          params={"detach": "true"} if detach else None)


def _identity_path(identity_id: str) -> str:
    return f"{IDENTITIES_PATH}/{quote(str(identity_id), safe='')}"


def _token_path(token_id: str, action: str = "") -> str:
    path = f"{TOKENS_PATH}/{quote(str(token_id), safe='')}"
    return f"{path}/{action}" if action else path


def _headers(token: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _request_args(json: Mapping[str, Any] | None, params: Mapping[str, Any] | None,
                  idempotency_key: str | None) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if json is not None:
        args["json"] = dict(json)
    if params:
        args["params"] = dict(params)
    if idempotency_key:
        args["headers"] = {"Idempotency-Key": idempotency_key}
    return args


class _Base:
    def __init__(self, token: str | None, *, region: str | None = None,
                 base_url: str | None = None,
                 regions: Mapping[str, str] | None = None) -> None:
        self._token = token.strip() if token else None
        if self._token is None:
            if base_url is None:
                raise ClientMisconfigured(
                    "Without a token the client needs base_url.",
                    "Pass base_url=https://… (verify() needs no token of its own).")
            self.base_url, self.region = _checked_base_url(base_url), region
        else:
            target = resolve(self._token, region, base_url, regions)
            self.base_url, self.region = target.base_url, target.region
        self._headers = _headers(self._token)

    def _needs_token(self, what: str) -> None:
        if self._token is None:
            raise ClientMisconfigured(f"{what} needs a token.",
                                      "Create the client with token=… (a management token "
                                      "with tokens:manage for .tokens).")

    def __repr__(self) -> str:  # never show the token
        return f"{type(self).__name__}(region={self.region!r}, base_url={self.base_url!r})"


class Client(_Base):
    """Synchronous client: `Client(base_url=…, token=…)`, or `Client(token, region="eu1")`
    where the deployment's region map (`TALLYKEY_REGIONS`) knows the region.

    Raises at construction when the token fails its offline checks or no base URL can be
    found; every call raises the server's refusal as a `ConnectFailed` subclass.
    """

    def __init__(self, token: str | None = None, *, region: str | None = None,
                 base_url: str | None = None, regions: Mapping[str, str] | None = None,
                 timeout: float = DEFAULT_TIMEOUT, verify: bool | str = True) -> None:
        super().__init__(token, region=region, base_url=base_url, regions=regions)
        #: An `httpx.Client` on the base URL that sends the token: use it for the
        #: platform's other endpoints.
        self.http = httpx.Client(base_url=self.base_url, headers=self._headers,
                                 timeout=timeout, verify=verify)
        #: The management API's token calls: `create`, `list`, `get`, `update`, `rotate`,
        #: `renew`, `suspend`, `resume`, `revoke`.
        self.tokens: Tokens[dict[str, Any]] = Tokens(self._send)
        #: The identities' calls: `create`, `list`, `get`, `update`, `delete`.
        self.identities: Identities[dict[str, Any]] = Identities(self._send)

    def verify(self, secret: str | None, scopes: Iterable[str] | None = None,
               workspace: str | None = None, *, cost: int | None = None,
               client_ip: str | None = None) -> Verification:
        """Check `secret` (with `scopes` held in `workspace`, if named): a `Verification`,
        valid or refused with its reason. Raises only when no verdict came back."""
        if (refused := overlong(secret)) is not None:
            return refused
        url = self.base_url + VERIFY_PATH
        try:
            response = self.http.post(VERIFY_PATH, json=verify_body(
                secret, scopes, workspace, cost, client_ip))
        except httpx.TransportError as error:
            raise unreachable(error, url) from None
        return verification(response)

    def connect(self, required_scopes: Iterable[str] = ()) -> ConnectionInfo:
        """Check the token against the region's `/core/v3/info`: who it belongs to and what
        it may do; `required_scopes` it must grant. Raises a `ConnectFailed` subclass."""
        self._needs_token("connect()")
        url = self.base_url + INFO_PATH
        try:
            response = self.http.get(INFO_PATH)
        except httpx.TransportError as error:
            raise unreachable(error, url) from None
        return interpret(response, self.base_url, required_scopes)

    def _send(self, method: str, path: str, json: Mapping[str, Any] | None = None, *,
              params: Mapping[str, Any] | None = None,
              idempotency_key: str | None = None) -> dict[str, Any]:
        self._needs_token("The management API")
        try:
            response = self.http.request(method, path,
                                         **_request_args(json, params, idempotency_key))
        except httpx.TransportError as error:
            raise unreachable(error, self.base_url + path) from None
        return answer(response)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


class AsyncClient(_Base):
    """`Client` for asyncio: `async with AsyncClient(base_url=…, token=…) as tk:
    await tk.verify(secret)`, `await tk.tokens.create(name=…)`, `await tk.connect()`."""

    def __init__(self, token: str | None = None, *, region: str | None = None,
                 base_url: str | None = None, regions: Mapping[str, str] | None = None,
                 timeout: float = DEFAULT_TIMEOUT, verify: bool | str = True) -> None:
        super().__init__(token, region=region, base_url=base_url, regions=regions)
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers,
                                      timeout=timeout, verify=verify)
        self.tokens: Tokens[Awaitable[dict[str, Any]]] = Tokens(self._send)
        self.identities: Identities[Awaitable[dict[str, Any]]] = Identities(self._send)

    async def verify(self, secret: str | None, scopes: Iterable[str] | None = None,
                     workspace: str | None = None, *, cost: int | None = None,
                     client_ip: str | None = None) -> Verification:
        """As `Client.verify`."""
        if (refused := overlong(secret)) is not None:
            return refused
        url = self.base_url + VERIFY_PATH
        try:
            response = await self.http.post(VERIFY_PATH, json=verify_body(
                secret, scopes, workspace, cost, client_ip))
        except httpx.TransportError as error:
            raise unreachable(error, url) from None
        return verification(response)

    async def connect(self, required_scopes: Iterable[str] = ()) -> ConnectionInfo:
        """As `Client.connect`."""
        self._needs_token("connect()")
        url = self.base_url + INFO_PATH
        try:
            response = await self.http.get(INFO_PATH)
        except httpx.TransportError as error:
            raise unreachable(error, url) from None
        return interpret(response, self.base_url, required_scopes)

    async def _send(self, method: str, path: str, json: Mapping[str, Any] | None = None,
                    *, params: Mapping[str, Any] | None = None,
                    idempotency_key: str | None = None) -> dict[str, Any]:
        self._needs_token("The management API")
        try:
            response = await self.http.request(
                method, path, **_request_args(json, params, idempotency_key))
        except httpx.TransportError as error:
            raise unreachable(error, self.base_url + path) from None
        return answer(response)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.aclose()


__all__ = [
    "REFUSALS", "AccessDenied", "AccountInfo", "AsyncClient", "Client",
    "ClientMisconfigured", "ConnectFailed", "ConnectionInfo", "IpNotAllowed", "RateLimited",
    "RequestRejected", "ScopeMissing", "ServerUnreachable", "ServiceUnavailable",
    "TokenExpired", "TokenMalformed", "TokenMissing", "TokenNotRecognised",
    "TokenOwnerInactive", "TokenPending", "TokenRejected", "TokenRevoked", "TokenSuspended",
    "TokenUnusable",
    "Tokens", "UnexpectedResponse", "UsageExhausted", "UserInfo", "Verification",
    "WrongRegion", "region_map", "resolve",
]
