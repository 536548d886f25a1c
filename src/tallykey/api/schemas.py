"""Request and response bodies of the management API."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tallykey.accounts.models import Account, User, Workspace
from tallykey.audit.models import AuditEvent
from tallykey.errors import ValidationFailed
from tallykey.feed.propagation import PropagationView
from tallykey.tokens.policy import DEFAULT_GRACE_SECONDS
from tallykey.tokens.schemas import Timestamp, TokenView


class Strict(BaseModel):
    """A request body: unknown fields are refused, and so are values of the wrong JSON
    type (no `0` for `false`, no `"30"` for `30`): the body must match the documented
    schema exactly."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorBody(BaseModel):
    """Every error answer: a stable code, what went wrong, what to do about it, and
    details that depend on the error (`field`, `errors`, `scope`, `revoked_at`, ...)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="stable machine-readable code, e.g. invalid_token")
    message: str = Field(description="what went wrong, for a person")
    hint: str | None = Field(default=None, description="what to do about it")


class RateLimitIn(Strict):
    name: str = Field(default="default", max_length=32)
    limit: int = Field(description="requests per window: 1 to 1000000000")
    per_seconds: int = Field(description="the window: 1 to 2592000 seconds (30 days)")
    shared: Literal["owner", "external_id"] | None = Field(
        default=None, description="null: this token alone; owner: every token of its "
        "owner; external_id: every token of the account with its external id")


class RefillIn(Strict):
    amount: int
    interval: Literal["daily", "monthly"]


class CreditsIn(Strict):
    remaining: int = Field(description="0 to 10^12; each admitted request spends its cost "
                           "(1, or Tallykey-Cost on /auth/request)")
    refill: RefillIn | None = Field(default=None, description="set back to `amount` at "
                                    "00:00 UTC each day, or on the 1st of each month")


def _controls(body: BaseModel) -> dict[str, Any]:
    """The key-control fields of a create or update body, as the token service takes
    them (only those the body names)."""
    named = body.model_fields_set
    found: dict[str, Any] = {}
    rate_limits = getattr(body, "rate_limits", None)
    if "rate_limits" in named and rate_limits is not None:
        found["rate_limits"] = [r.model_dump() for r in rate_limits]
    credits = getattr(body, "credits", None)
    if "credits" in named:
        if credits is None:
            found["remove_credits"] = True
        else:
            found["credits"] = credits.model_dump()
    for name in ("metadata", "external_id"):
        if name in named and getattr(body, name) is not None:
            found[name] = getattr(body, name)
    if "identity_id" in named:
        identity_id = getattr(body, "identity_id", None)
        if identity_id is None or not identity_id.strip():
            found["detach_identity"] = True
        else:
            found["identity_id"] = identity_id
    if "plan_id" in named:
        plan_id = getattr(body, "plan_id", None)
        if plan_id is None or not plan_id.strip():
            found["detach_plan"] = True
        else:
            found["plan_id"] = plan_id
    return found


class TokenCreate(Strict):
    name: str = Field(max_length=10_000)
    description: str = Field(default="", max_length=10_000)
    kind: Literal["personal", "application", "decoy"] = "personal"
    workspace: str | None = None
    scopes: list[str] = Field(default_factory=list, max_length=50)
    ip_allowlist: list[str] = Field(default_factory=list, max_length=1000)
    target: str | None = None
    expires_at: str | None = Field(default=None, description="ISO 8601 date or date-time")
    expires_in_days: int | None = None
    rate_limits: list[RateLimitIn] = Field(default_factory=list, max_length=10)
    credits: CreditsIn | None = None
    metadata: dict[str, Any] | None = Field(
        default=None, description="a JSON object of at most 4 KB, returned on verify")
    external_id: str | None = Field(
        default=None, max_length=255, description="your id for the customer or "
        "integration; searchable, and sent as Tallykey-External-Id on /auth/request")
    identity_id: str | None = Field(
        default=None, max_length=255, description="the identity (id or external id) the "
        "token belongs to: it spends the identity's credits and counts against its rate "
        "limits (administrators only)")
    plan_id: str | None = Field(
        default=None, max_length=255, description="the plan (id or name) the token is "
        "on: its rate limits, credit refill and scopes ceiling apply; the token's own "
        "rate limits and credits override them (administrators only)")

    def controls(self) -> dict[str, Any]:
        return {k: v for k, v in _controls(self).items()
                if k not in ("remove_credits", "detach_identity", "detach_plan")}


class TokenUpdate(Strict):
    name: str | None = Field(default=None, max_length=10_000)
    description: str | None = Field(default=None, max_length=10_000)
    ip_allowlist: list[str] | None = Field(default=None, max_length=1000)
    target: str | None = None
    scopes: list[str] | None = Field(default=None, max_length=50)
    expires_at: str | None = Field(default=None, description="earlier than now; never later")
    rate_limits: list[RateLimitIn] | None = Field(
        default=None, max_length=10, description="replaces every limit; [] removes them")
    credits: CreditsIn | None = Field(default=None, description="sets the credits; null "
                                      "removes them (requests are no longer costed)")
    metadata: dict[str, Any] | None = Field(default=None, description="replaces it; {} "
                                            "clears it")
    external_id: str | None = Field(default=None, max_length=255,
                                    description="\"\" clears it")
    identity_id: str | None = Field(
        default=None, max_length=255, description="moves the token to this identity (id "
        "or external id); null takes it out of its identity (administrators only)")
    plan_id: str | None = Field(
        default=None, max_length=255, description="puts the token on this plan (id or "
        "name); null takes it off its plan (administrators only)")

    def controls(self) -> dict[str, Any]:
        return _controls(self)


class RotateRequest(Strict):
    grace_seconds: int = Field(
        default=DEFAULT_GRACE_SECONDS, description="0 to 604800; default one day (86400), "
        "as in the console and the CLI")


class RenewRequest(Strict):
    expires_at: str | None = Field(default=None, description="ISO 8601 date or date-time")
    expires_in_days: int | None = None
    grace_seconds: int = Field(
        default=DEFAULT_GRACE_SECONDS, description="How long the renewed token's secret "
        "keeps working: 0 to 604800; default one day (86400), as for a rotation")


class RevokeRequest(Strict):
    reason: str = Field(default="", max_length=500)


class RevokedTokenView(TokenView):
    propagation: PropagationView


class SuspensionView(TokenView):
    """The answer to suspend, resume, approve and deny: the token, and how far the change
    reached."""

    propagation: PropagationView


class ArchivedWorkspaceView(BaseModel):
    """An archived workspace: how many tokens stopped, and on which nodes for sure."""

    workspace: WorkspaceView
    tokens_stopped: int
    propagation: PropagationView


class SecretView(BaseModel):
    """A retrievable application token's credentials (admins only; audited)."""

    id: str
    prefix: str
    username: str
    password: str
    token: str


class TargetCount(BaseModel):
    target: str
    active: int
    total: int


class TokenList(BaseModel):
    items: list[TokenView]
    next_cursor: str | None


class ScopeView(BaseModel):
    """One scope of the catalog (`TALLYKEY_SCOPES_FILE`, SPEC §11)."""

    name: str
    description: str
    admin_only: bool


class WorkspaceView(BaseModel):
    """A part of an account (the platform may call it a project or a team)."""

    id: str
    slug: str
    name: str
    timezone: str
    archived_at: Timestamp | None

    @classmethod
    def of(cls, workspace: Workspace) -> WorkspaceView:
        return cls(id=workspace.id, slug=workspace.slug, name=workspace.name,
                   timezone=workspace.timezone, archived_at=workspace.archived_at)


class WorkspaceCreate(Strict):
    slug: str | None = Field(default=None, max_length=63,
                             description="lowercase letters, digits and dashes; "
                             "default: made from the name")
    name: str = Field(max_length=200)
    timezone: str = Field(default="UTC", max_length=64, description="IANA time zone")

    @property
    def chosen_slug(self) -> str:
        return self.slug if self.slug is not None else slug_of(self.name)


def slug_of(name: str) -> str:
    """A slug made from a display name: "North Shop" -> "north-shop"."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:63].rstrip("-")


class WorkspaceUpdate(Strict):
    slug: str | None = Field(default=None, max_length=63)
    name: str | None = Field(default=None, max_length=200)
    timezone: str | None = Field(default=None, max_length=64)


#: What each role may do (SPEC §17), for the API documentation.
ROLE_DESCRIPTION = ("`admin`: everything in the account; `member`: their own personal "
                    "tokens within their workspace permissions; `auditor`: reads every "
                    "token, the usage and the audit log, changes nothing and creates no "
                    "token (every change answers 403 `auditor_read_only`).")


class UserView(BaseModel):
    id: str
    email: str
    name: str
    role: str
    active: bool
    workspaces: dict[str, list[str]]
    #: The user's own choice (`PATCH /api/v1/session/settings`).
    weekly_digest: bool = True

    @classmethod
    def of(cls, user: User) -> UserView:
        return cls(id=user.id, email=user.email, name=user.name, role=user.role,
                   active=user.active,
                   workspaces={g.workspace_id: list(g.scopes) for g in user.grants},
                   weekly_digest=user.weekly_digest)


class UserCreate(Strict):
    email: str = Field(max_length=254)
    name: str = Field(default="", max_length=200)
    role: Literal["admin", "member", "auditor"] = Field(default="member",
                                                        description=ROLE_DESCRIPTION)
    password: str | None = Field(default=None, max_length=1000)
    workspaces: dict[str, list[str]] = Field(default_factory=dict)


class UserUpdate(Strict):
    role: Literal["admin", "member", "auditor"] | None = Field(
        default=None, description=ROLE_DESCRIPTION)
    active: bool | None = None
    workspaces: dict[str, list[str]] | None = Field(
        default=None, description="workspace id (or slug) -> the scopes held there; "
        "replaces every grant")


class AccountView(BaseModel):
    id: str
    slug: str
    name: str
    region: str
    max_validity_days: int
    reminder_days: list[int]
    retrievable_application_tokens: bool
    ip_allowlist: list[str]
    new_network_alerts: bool
    two_factor_policy: str = "off"
    token_approval: str = "off"  # noqa: S105 - a policy, not a password
    revoke_inactive_days: int | None = None
    contain: str = "off"

    @classmethod
    def of(cls, account: Account) -> AccountView:
        return cls(id=account.id, slug=account.slug, name=account.name, region=account.region,
                   max_validity_days=account.max_validity_days,
                   reminder_days=list(account.reminder_days),
                   retrievable_application_tokens=account.retrievable_application_tokens,
                   ip_allowlist=list(account.ip_allowlist),
                   new_network_alerts=account.new_network_alerts,
                   two_factor_policy=account.two_factor_policy,
                   token_approval=account.token_approval,
                   revoke_inactive_days=account.revoke_inactive_days,
                   contain=account.contain)


class AccountUpdate(Strict):
    max_validity_days: int | None = None
    reminder_days: list[int] | None = Field(default=None, max_length=10)
    retrievable_application_tokens: bool | None = None
    ip_allowlist: list[str] | None = Field(default=None, max_length=1000)
    new_network_alerts: bool | None = None
    two_factor_policy: Literal["off", "admins", "everyone"] | None = None
    token_approval: Literal["off", "members"] | None = None
    revoke_inactive_days: int | None = Field(default=None, description="null: off")
    contain: Literal["off", "suspend"] | None = None  # SPEC §17: suspend on an anomaly alert


class AuditView(BaseModel):
    id: int
    occurred_at: Timestamp
    action: str
    actor_type: str
    actor_id: str | None
    actor: str
    target_type: str | None
    target_id: str | None
    ip: str | None
    details: dict[str, Any]

    @classmethod
    def of(cls, event: AuditEvent) -> AuditView:
        return cls(id=event.id, occurred_at=event.occurred_at, action=event.action,
                   actor_type=event.actor_type, actor_id=event.actor_id,
                   actor=event.actor_label, target_type=event.target_type,
                   target_id=event.target_id, ip=event.ip, details=event.details)


class AuditList(BaseModel):
    items: list[AuditView]
    next_cursor: int | None


class LoginRequest(Strict):
    email: str = Field(max_length=254)
    password: str = Field(max_length=1000)


class SessionView(BaseModel):
    user: UserView
    csrf_token: str
    expires_at: Timestamp
    #: `code`: send the authenticator code to `POST /api/v1/session/second-factor` next;
    #: `enrol`: the account requires two-factor sign-in, set it up in the console first.
    awaiting: str | None = None


class VerifyRequest(Strict):
    authorization: str | None = Field(default=None, max_length=4096,
                                      description="The request's Authorization header")
    token: str | None = Field(default=None, max_length=4096,
                              description="Or the bare token (as Bearer)")
    client_ip: str | None = Field(default=None, max_length=64,
                                  description="Honoured only from trusted proxies")
    required_scopes: list[str] = Field(default_factory=list, max_length=50)
    user_agent: str | None = Field(default=None, max_length=1000)
    workspace: str | None = Field(
        default=None, max_length=64,
        description="The workspace (id or slug) the request is for: the scopes must be "
        "held there. Without it a scope passes only if held in every workspace the token "
        "sees.")
    cost: int = Field(default=1, ge=0, le=1000,
                      description="What this request spends of the token's usage credits")


class RateLimitStateView(BaseModel):
    """A rate limit as counted on the answering node: `remaining` requests in the window
    that ends in `reset` seconds."""

    name: str
    limit: int
    per_seconds: int
    remaining: int
    reset: int


class IdentityRef(BaseModel):
    """The identity a verdict names: its id, the platform's id for it, its metadata."""

    id: str
    external_id: str
    metadata: dict[str, Any] | None = None


class VerifyResponse(BaseModel):
    allowed: bool
    status: int
    error: str | None
    reason: str | None = Field(
        default=None, description="Why it was refused, for machines (`revoked`, "
        "`expired`, `rate_limited`, …): the same reasons as every error body")
    message: str | None
    hint: str | None
    token_id: str | None
    name: str | None = Field(default=None, description="The token's name (allowed)")
    account: str | None
    kind: str | None
    scopes: list[str]
    expires_at: Timestamp | None
    client_ip: str
    workspace: str | None = Field(description="The workspace id the verdict answers for")
    workspaces: dict[str, list[str]] = Field(
        description="Per workspace id the token sees: its effective scopes there")
    retry_after: int | None = Field(default=None, description="seconds to wait (429, 503)")
    rate_limits: list[RateLimitStateView] = Field(default_factory=list)
    credits_remaining: int | None = Field(
        default=None, description="the token's usage credits left after this request")
    metadata: dict[str, Any] | None = None
    external_id: str | None = None
    identity: IdentityRef | None = Field(
        default=None, description="The identity the token belongs to (SPEC §16)")
    identity_credits_remaining: int | None = Field(
        default=None, description="the identity's pooled credits left after this request")


def parse_moment(value: str, field: str) -> datetime | date:
    """An ISO 8601 date (`2027-03-31`) or date-time with offset."""
    text = value.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is not None:
            moment.astimezone(UTC)  # 0001-01-01T00:00:00+01:00 has no UTC equivalent
    except ValueError:
        raise ValidationFailed(
            f"{field} {value!r} is not an ISO 8601 date or date-time.",
            "Write e.g. 2027-03-31 or 2027-03-31T18:00:00+01:00.", field=field) from None
    except OverflowError:
        raise ValidationFailed(
            f"{field} {value!r} is outside the range of dates tallykey can store.",
            "Write a date between the years 2 and 9998.", field=field) from None
    return moment


class ImportKeyIn(Strict):
    """One key the platform issued before (SPEC §16): exactly one of `key` and `hash`."""

    key: str | None = Field(default=None, max_length=1024, description="the key itself, "
                            "exactly as issued: hashed at once, never stored")
    hash: str | None = Field(default=None, max_length=100,
                             description="sha256:<64 hex digits> of the key")
    name: str = Field(max_length=10_000)
    description: str = Field(default="", max_length=10_000)
    scopes: list[str] = Field(default_factory=list, max_length=50)
    expires_at: str | None = Field(default=None, description="ISO 8601 date or date-time")
    expires_in_days: int | None = None
    metadata: dict[str, Any] | None = Field(
        default=None, description="a JSON object of at most 4 KB, returned on verify")
    external_id: str | None = Field(default=None, max_length=255)
    identity_id: str | None = Field(default=None, max_length=255, description="the "
                                    "identity the key belongs to: its id or external id")

    def __repr__(self) -> str:  # never print a key
        return f"ImportKeyIn(name={self.name!r})"


class ImportRequest(Strict):
    keys: list[ImportKeyIn] = Field(min_length=1, max_length=10_000,
                                    description="up to 10,000 keys per call")


class ImportedKeyView(BaseModel):
    index: int
    outcome: Literal["created", "existing", "unavailable"]
    id: str | None = Field(description="the token's id (none when unavailable)")
    prefix: str = Field(description="imported:<first 8 hex digits of the key's SHA-256>")
    message: str | None = None


class ImportAnswer(BaseModel):
    created: int
    existing: int
    unavailable: int
    keys: list[ImportedKeyView]
