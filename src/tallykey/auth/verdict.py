"""The answer of one verification: allowed or not, and everything a caller needs to
respond (status, RFC 6750 challenge, message) or to authorise (account, scopes, expiry)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from tallykey.auth.rates import RateLimitState, RateView
from tallykey.errors import TallykeyError, error_body

REALM = "tallykey"


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    status: int
    error: str = ""
    #: Why it was refused, for machines (`revoked`, `expired`, …; `tallykey.errors`).
    reason: str = ""
    message: str = ""
    hint: str = ""
    token_id: str | None = None
    account_id: str | None = None
    account: str | None = None
    kind: str | None = None
    #: The scopes that pass: in `workspace` when the request named one, else those held
    #: in every workspace the token sees (plus admin-only account scopes).
    scopes: frozenset[str] = frozenset()
    #: Per workspace id the token sees: its effective scopes there (SPEC §11).
    workspaces: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: The workspace (id) this verdict answers for, when the request named one.
    workspace: str | None = None
    owner_id: str | None = None
    owner_email: str | None = None
    expires_at: datetime | None = None
    retry_after: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: `expires_at` in ISO 8601, computed once (it goes on every allowed response).
    expires_iso: str = ""
    #: `scopes` sorted and space separated, as identity headers carry them.
    scopes_text: str = ""
    #: The token's metadata and external id (SPEC §13).
    metadata: Mapping[str, Any] | None = None
    external_id: str | None = None
    #: The token's name (allowed verdicts).
    name: str | None = None
    #: The token's rate limits (their counts are read when asked, see `rate_limits`) and
    #: the credits left after this request, for tokens that have them.
    rates: RateView | None = None
    credits_remaining: int | None = None
    #: The identity the token belongs to (SPEC §16): `{"id", "external_id", "metadata"}`,
    #: and what its credit pool holds after this request, when it has one.
    identity: Mapping[str, Any] | None = None
    identity_credits_remaining: int | None = None
    #: Made on first use and kept with the verdict, which is cached per token (a cache,
    #: never a change of the answer; see `identity_headers`, `expiry_header`,
    #: `for_workspace`). Left empty until then, so a cache of embedded verdicts that
    #: never answer `/auth/request` holds no header bytes.
    _identity: tuple[tuple[bytes, bytes], ...] | None = field(default=None, compare=False,
                                                            repr=False)
    _expiry: tuple[bytes, bytes] | None = field(default=None, compare=False, repr=False)
    _per_workspace: dict[str, Verdict] | None = field(default=None, compare=False,
                                                      repr=False)

    @classmethod
    def allowing(cls, **fields: Any) -> Verdict:
        expires_at: datetime = fields["expires_at"]
        fields.setdefault("details", _NO_DETAILS)
        return cls(allowed=True, status=200, expires_iso=expires_at.isoformat(),
                   scopes_text=scopes_text(fields["scopes"]), **fields)

    def for_workspace(self, workspace_id: str) -> Verdict:
        """This allowed verdict as it answers for one workspace (made once per workspace
        the token sees, then kept with this verdict)."""
        known = self._per_workspace
        if known is None:
            known = {}
            object.__setattr__(self, "_per_workspace", known)
        answer = known.get(workspace_id)
        if answer is None:
            scopes = self.workspaces.get(workspace_id, frozenset())
            answer = known.setdefault(workspace_id, replace(
                self, scopes=scopes, scopes_text=scopes_text(scopes),
                workspace=workspace_id, _identity=None, _expiry=None, _per_workspace=None))
        return answer

    def identity_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """Who the request is, for a proxy (`/auth/request`, nginx `auth_request_set`),
        as raw ASGI pairs: built on first use, then kept with the verdict."""
        headers = self._identity
        if headers is None:
            expiry = self.expiry_header()
            headers = (_pair(b"tallykey-token-id", self.token_id or "", shared=False),
                       _pair(b"tallykey-account", self.account or ""),
                       _pair(b"tallykey-scopes", self.scopes_text),
                       expiry,
                       _pair(b"tallykey-token-kind", self.kind or ""))
            if self.owner_id:
                headers += (_pair(b"tallykey-user-id", self.owner_id),)
            if self.workspace:
                headers += (_pair(b"tallykey-workspace", self.workspace),)
            if self.external_id is not None:
                headers += (_pair(b"tallykey-external-id", self.external_id, shared=False),)
            if self.identity is not None:
                headers += (_pair(b"tallykey-identity-id", self.identity["id"]),
                            _pair(b"tallykey-identity-external-id",
                                  self.identity["external_id"]))
            object.__setattr__(self, "_identity", headers)
        return headers

    def expiry_header(self) -> tuple[bytes, bytes]:
        """`Tallykey-Token-Expires` as a raw ASGI pair (the embedded middleware adds it to
        every allowed response): built on first use, then kept with the verdict."""
        header = self._expiry
        if header is None:
            header = (b"tallykey-token-expires", self.expires_iso.encode())
            object.__setattr__(self, "_expiry", header)
        return header

    def scopes_in(self, workspace_id: str) -> frozenset[str]:
        """The token's scopes in one workspace (empty if it does not see it)."""
        return self.workspaces.get(workspace_id, frozenset())

    @classmethod
    def refused(cls, error: TallykeyError) -> Verdict:
        """A refusal: an `AuthenticationError`, or `StoreUnavailable` (503) when the
        token could not be checked."""
        retry_after = getattr(error, "retry_after", None)
        return cls(
            allowed=False, status=error.status, error=error.code, reason=error.reason,
            message=error.message,
            hint=error.hint, retry_after=retry_after if isinstance(retry_after, int) else None,
            details={k: v for k, v in error.details.items() if k != "retry_after"},
        )

    @property
    def rate_limits(self) -> tuple[RateLimitState, ...]:
        """Each rate limit's state on this node now: remaining requests and reset."""
        return () if self.rates is None else self.rates.states()

    def rate_limit_headers(self) -> dict[str, str]:
        """`RateLimit-Limit`, `-Remaining`, `-Reset` of the tightest limit (or none)."""
        if self.rates is None:
            return {}
        tightest = self.rates.tightest()
        return {"RateLimit-Limit": str(tightest.limit),
                "RateLimit-Remaining": str(tightest.remaining),
                "RateLimit-Reset": str(tightest.reset)}

    def body(self) -> dict[str, Any]:
        """The JSON error body: `{"error", "message", "reason", "hint", ...}`."""
        return error_body(self.error, self.message, self.hint, self.reason, self.details)

    def headers(self) -> dict[str, str]:
        """Response headers: the challenge, `Tallykey-Reason` (and `Retry-After`,
        `RateLimit-*` for a token with rate limits) on refusal, the token's expiry on
        success."""
        if self.allowed:
            if self.rates is None:
                return {"Tallykey-Token-Expires": self.expires_iso}
            return {"Tallykey-Token-Expires": self.expires_iso, **self.rate_limit_headers()}
        # A 503 or an unknown operation (404) says nothing about the credentials, so it
        # carries no challenge.
        headers = ({} if self.status in (404, 503)
                   else {"WWW-Authenticate": self.challenge()})
        if self.reason:  # for a proxy, which passes headers on but not the body
            headers["Tallykey-Reason"] = self.reason
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        if self.rates is not None:  # a controlled token's limits, as counted now
            headers.update(self.rate_limit_headers())
        return headers

    def challenge(self) -> str:
        """RFC 6750 §3: no error code when no credentials were sent at all."""
        if not self.error:
            return f'Bearer realm="{REALM}"'
        parts = [f'Bearer realm="{REALM}"', f'error="{self.error}"',
                 f'error_description="{_quoted(self.message)}"']
        if self.error == "insufficient_scope" and "scope" in self.details:
            parts.append(f'scope="{self.details["scope"]}"')
        return ", ".join(parts)


#: The details of every allowed verdict: none. One shared instance (a cache of a million
#: verdicts would otherwise hold a million empty dicts); never mutated.
_NO_DETAILS: dict[str, Any] = {}
#: `scopes_text` per scope set, one instance each (tokens share a handful of scope sets).
_SCOPES_TEXT: dict[frozenset[str], str] = {}


def scopes_text(scopes: frozenset[str]) -> str:
    """`scopes` sorted and space separated: one shared instance per scope set."""
    text = _SCOPES_TEXT.get(scopes)
    if text is None:
        if len(_SCOPES_TEXT) >= _MAX_SHARED_PAIRS:
            _SCOPES_TEXT.clear()
        text = _SCOPES_TEXT.setdefault(frozenset(scopes), " ".join(sorted(scopes)))
    return text


#: Header pairs many tokens share (an account, a scope set, an owner), one instance each.
_SHARED_PAIRS: dict[tuple[bytes, str], tuple[bytes, bytes]] = {}
_MAX_SHARED_PAIRS = 100_000


def _pair(name: bytes, value: str, shared: bool = True) -> tuple[bytes, bytes]:
    if not shared:
        return (name, value.encode())
    pair = _SHARED_PAIRS.get((name, value))
    if pair is None:
        if len(_SHARED_PAIRS) >= _MAX_SHARED_PAIRS:
            _SHARED_PAIRS.clear()
        pair = _SHARED_PAIRS.setdefault((name, value), (name, value.encode()))
    return pair


def _quoted(text: str) -> str:
    """RFC 6750 error_description: printable ASCII except '"' and '\\'."""
    return "".join(ch for ch in text if 0x20 <= ord(ch) <= 0x7E and ch not in '"\\')
