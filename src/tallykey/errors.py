"""Every error tallykey raises: each knows its HTTP status, its error code, its reason and
what to fix.

`code` is the protocol's word (RFC 6750's `invalid_token`, or the API's `not_found`);
`reason` is the stable, machine-readable why (`revoked`, `expired`, `rotated_out`, …) that
every JSON body, the `Tallykey-Reason` header of `/auth/request`, the usage counters and
the client SDK's exception table share. One renderer per medium turns an error into an
answer: JSON (`as_dict`), HTML (the console's error page), an exit code (the CLI).
Messages never contain a token secret.

The errors of configuration and of files the operator hands over (settings, the scope
catalog, the OpenAPI document, keys, migrations), which the CLI turns into one line and
an exit code, and the console's redirects (`LoginRequired`, `SecondFactorPending`,
`CsrfRefused`) are here too. Three live elsewhere on purpose: the client SDK's
exceptions (`tallykey.client`, which a client-only install imports alone), a refused
credential (`tallykey.auth.caller.TallykeyRefused`, which carries its verdict) and a body
past the size limit (`BodyTooLarge`, which must be the framework's HTTP exception: the
framework turns any other exception raised while it reads a body into a 400).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, ClassVar

#: Anything shaped like a tallykey token, whole or damaged (a typo, extra characters):
#: region, then the 12-character public id, then secret material.
_SECRET_SHAPED = re.compile(r"(tlk_[0-9A-Za-z]{0,8}_[0-9A-Za-z]{12})[0-9A-Za-z]+")


def mask_secrets(text: str) -> str:
    """`text` with the secret part of every token-shaped string cut off (`tlk_eu1_<id>…`):
    an error may name a token by its public prefix, never carry its secret."""
    return _SECRET_SHAPED.sub(r"\1…", text) if "tlk_" in text else text


def error_body(code: str, message: str, hint: str = "", reason: str = "",
               details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one JSON error body of every surface: `{"error", "message", "reason", "hint",
    …details}`; a request without credentials says `missing_token` (RFC 6750 gives it
    no code)."""
    body: dict[str, Any] = {"error": code or "missing_token", "message": message}
    if reason:
        body["reason"] = reason
    if hint:
        body["hint"] = hint
    if details:
        body.update(details)
    return body


class ServerExtraMissing(ImportError):
    """A server-side name imported where only the client SDK is installed (raised by
    `tallykey.extras.require_extra`). Its public home is the package:
    `from tallykey import ServerExtraMissing`, and a traceback names it so."""


ServerExtraMissing.__module__ = "tallykey"


class TallykeyError(Exception):
    """Base of every error the product raises on purpose."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "invalid_request"
    #: Why, for machines; "" where `code` already says all (a management error).
    reason: ClassVar[str] = ""

    def __init__(self, message: str, hint: str = "", **details: Any) -> None:
        message, hint = mask_secrets(message), mask_secrets(hint)
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = {key: mask_secrets(value) if isinstance(value, str) else value
                        for key, value in details.items()}

    def as_dict(self) -> dict[str, Any]:
        """The JSON error body (see `error_body`)."""
        return error_body(self.code, self.message, self.hint, self.reason, self.details)

    def headers(self) -> dict[str, str]:
        """Response headers every answer to this error carries (e.g. `Retry-After`)."""
        return {}


class StoreUnavailable(TallykeyError):
    """The token store (database) cannot be reached or cannot take writes right now:
    a connection failure, a timeout, a full disk or a read-only store. Nothing changed."""

    status = 503
    code = "store_unavailable"
    reason = "store_unavailable"

    def __init__(self, message: str, hint: str = "", *, retry_after: int = 2) -> None:
        super().__init__(message, hint or f"Try again in {retry_after} seconds.")
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


# --- management / input errors -------------------------------------------------------


class ValidationFailed(TallykeyError):
    """Input was rejected; nothing was changed."""

    status = 422
    code = "validation_failed"


class NotFound(TallykeyError):
    status = 404
    code = "not_found"


class PermissionDenied(TallykeyError):
    status = 403
    code = "forbidden"


#: The `reason` of every change an auditor asks for (`ReadOnlyRole`).
AUDITOR_READ_ONLY = "auditor_read_only"


class ReadOnlyRole(PermissionDenied):
    """An auditor asked to change something: auditors read, never change (SPEC §17).
    The body names the role: `{"error": "forbidden", "reason": "auditor_read_only",
    "role": "auditor", …}`."""

    def __init__(self, message: str = "Auditors can read but not change anything.",
                 hint: str = "Ask an administrator of your account to make this change.",
                 ) -> None:
        super().__init__(message, hint, reason=AUDITOR_READ_ONLY, role="auditor")


class Conflict(TallykeyError):
    status = 409
    code = "conflict"


class InvalidTimezone(TallykeyError):
    """The `Timezone` request header names no IANA time zone."""

    status = 400
    code = "invalid_timezone"


class UnsupportedMediaType(TallykeyError):
    status = 415
    code = "unsupported_media_type"


class Unauthenticated(TallykeyError):
    """A management call without a valid session or management token."""

    status = 401
    code = "unauthenticated"


class MetricsCredentialRequired(Unauthenticated):
    """`/metrics` without the scrape credential (`TALLYKEY_METRICS_TOKEN`)."""

    def __init__(self) -> None:
        super().__init__("The metrics need the scrape credential.",
                         "Send Authorization: Bearer <TALLYKEY_METRICS_TOKEN>.")

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="metrics"'}


class TooManyHeaders(TallykeyError):
    """A request with more header lines than the server reads."""

    status = 431
    code = "request_header_fields_too_large"


# --- authentication errors (SPEC §3 table) ------------------------------------------


class AuthenticationError(TallykeyError):
    """A request's credentials were refused. `code` is the RFC 6750 error code."""

    status = 401
    code = "invalid_token"


class MissingCredentials(AuthenticationError):
    """No Authorization header: RFC 6750 §3.1 says the challenge carries no error code."""

    code = ""
    reason = "missing"


class MalformedHeader(AuthenticationError):
    status = 400
    code = "invalid_request"
    reason = "malformed_header"


class TokenFormatError(AuthenticationError):
    """The token string itself is malformed; no lookup made. `problem` says how:
    `checksum`, `length`, `characters`, `whitespace`, `prefix`, `region` or `empty`."""

    reason = "malformed"

    def __init__(self, message: str, hint: str = "", *, problem: str) -> None:
        super().__init__(message, hint, problem=problem)
        self.problem = problem


class WrongRegion(AuthenticationError):
    reason = "wrong_region"


class UnknownToken(AuthenticationError):
    """Well formed, but no such token here (or its secret does not match)."""

    reason = "unknown"


class RotatedOut(AuthenticationError):
    """The secret was replaced by a rotation (or renewal) and its grace has ended."""

    reason = "rotated_out"

    def __init__(self, retired_at: datetime, *, renewed: bool = False) -> None:
        if renewed:
            super().__init__(
                f"This token was renewed: its secret stopped working at "
                f"{retired_at.isoformat()}.", "Use its successor, issued by the renewal.")
            return
        super().__init__(
            f"This token was rotated: its old secret stopped working at "
            f"{retired_at.isoformat()}.", "Use the new token issued by the rotation.")


class RevokedToken(AuthenticationError):
    reason = "revoked"

    def __init__(self, revoked_at: datetime) -> None:
        super().__init__(
            f"This token was revoked at {revoked_at.isoformat()} and can no longer be used.",
            "Ask an administrator for a new token, or create one in the console.",
            revoked_at=revoked_at.isoformat(),
        )


class TokenSuspended(AuthenticationError):
    """An administrator suspended the token; it works again once resumed. The body names
    the error `token_suspended`; the challenge keeps RFC 6750's `invalid_token`."""

    reason = "suspended"

    def __init__(self, suspended_at: datetime, suspended_by: str) -> None:
        super().__init__(
            f"This token was suspended by {suspended_by} at {suspended_at.isoformat()}; "
            "ask an administrator.",
            "A suspended token works again once an administrator resumes it.",
            error="token_suspended",
            suspended_at=suspended_at.isoformat(), suspended_by=suspended_by,
        )


class TokenPending(AuthenticationError):
    """The token awaits an administrator's approval (account policy `token_approval`); it
    works once approved. Like a suspension, the challenge keeps RFC 6750's
    `invalid_token` and the body names the error."""

    reason = "token_pending"

    def __init__(self, pending_since: datetime) -> None:
        super().__init__(
            f"This token awaits an administrator's approval (requested at "
            f"{pending_since.isoformat()}).",
            "It works once an administrator of your account approves it.",
            error="token_pending", pending_since=pending_since.isoformat(),
        )


class ExpiredToken(AuthenticationError):
    reason = "expired"

    def __init__(self, expired_at: datetime) -> None:
        super().__init__(
            f"Token Expired: this token expired at {expired_at.isoformat()}.",
            "Expiry cannot be extended: renew the token before it expires (a successor "
            "with a new expiry), or create a new one, and update your integration.",
            expired_at=expired_at.isoformat(),
        )


class OwnerInactive(AuthenticationError):
    reason = "owner_inactive"


class IpNotAllowed(AuthenticationError):
    status = 403
    code = "ip_not_allowed"
    reason = "ip_not_allowed"


class InsufficientScope(AuthenticationError):
    status = 403
    code = "insufficient_scope"
    reason = "insufficient_scope"

    def __init__(self, scope: str, message: str = "", hint: str = "", **details: Any) -> None:
        super().__init__(
            message or f"This request needs the scope {scope!r}, which the token does not grant.",
            hint or f"Use a token that has the {scope!r} scope.",
            scope=scope, **details,
        )
        self.scope = scope


class WorkspaceNotAllowed(AuthenticationError):
    """The token sees nothing in the workspace the request is for (SPEC §11)."""

    status = 403
    code = "workspace_not_allowed"
    reason = "workspace_not_allowed"


class WorkspaceArchived(AuthenticationError):
    """The token belongs to a workspace that was archived: it stopped with it."""

    reason = "workspace_archived"


class AccountSuspended(AuthenticationError):
    """The token's account was suspended by the platform's operator."""

    reason = "account_suspended"


class TooManyAttempts(AuthenticationError):
    status = 429
    code = "too_many_attempts"
    reason = "too_many_attempts"

    def __init__(self, retry_after: int,
                 message: str = "Too many failed authentication attempts from this address."
                 ) -> None:
        super().__init__(
            message,
            f"Wait {retry_after} seconds before trying again.",
            retry_after=retry_after,
        )
        self.retry_after = retry_after


class RateLimited(AuthenticationError):
    """A rate limit of the token (SPEC §13) is reached in its current window."""

    status = 429
    code = "rate_limited"
    reason = "rate_limited"

    def __init__(self, message: str, hint: str, *, limit: str, retry_after: int) -> None:
        super().__init__(message, hint, limit=limit, retry_after=retry_after)
        self.retry_after = retry_after


class UsageExhausted(AuthenticationError):
    """The token's usage credits (SPEC §13) are fewer than the request's cost."""

    status = 429
    code = "usage_exhausted"
    reason = "usage_exhausted"

    def __init__(self, message: str, hint: str, *, retry_after: int | None = None,
                 **details: Any) -> None:
        super().__init__(message, hint, **details,
                         **({"retry_after": retry_after} if retry_after else {}))
        if retry_after is not None:
            self.retry_after = retry_after


class InvalidCost(MalformedHeader):
    """A `Tallykey-Cost` header that is not a whole number from 0 to 1000."""

    reason = "invalid_cost"


class UnknownOperation(TallykeyError):
    """A request for an operation the platform's OpenAPI document does not list
    (`TALLYKEY_OPENAPI_FILE`, SPEC §15), refused before any token is checked."""

    status = 404
    code = "unknown_operation"
    reason = "unknown_operation"


# --- console sign-in (SPEC §12) -------------------------------------------------------


class LinkRefused(TallykeyError):
    """A password-reset link that is unknown, used, expired or for a deactivated user."""

    status = 410
    code = "link_refused"


class SecondFactorRefused(TallykeyError):
    """A wrong, replayed or too old authenticator code (or an unknown recovery code)."""

    status = 401
    code = "second_factor_refused"


class AnchorError(ValueError):
    """A key or a saved heads document that cannot be used; the message says why."""


class CatalogError(ValueError):
    """The scope catalog file cannot be used; the message is one line naming why."""


class CsrfRefused(Exception):
    """A state-changing request without the session's CSRF token."""


class DeliveryError(Exception):
    """A delivery failed. `permanent` failures (a refused recipient) are not retried.
    The message must never contain a secret: it is stored and shown to operators."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class IdempotencyKeyReused(ValidationFailed):
    code = "idempotency_key_reused"


class IdempotentRequestInProgress(Conflict):
    code = "idempotent_request_in_progress"


class KeyConfigError(TallykeyError):
    status = 500
    code = "key_configuration"


class LeakReportsNotConfigured(TallykeyError):
    """No usable keys: the operator has to set `TALLYKEY_LEAK_REPORT_KEYS`."""

    status = 503
    code = "leak_reports_not_configured"


class LoginRequired(Exception):
    """No live console session: the browser is sent to the login page."""


class MalformedSignature(TallykeyError):
    status = 400
    code = "invalid_request"


class OperationsError(ValueError):
    """The OpenAPI document cannot be used; the message is one line naming why."""


class PayloadTooLarge(TallykeyError):
    """A request body over the size limit (refused before the framework reads it)."""

    status = 413
    code = "payload_too_large"


class ReportTooLarge(PayloadTooLarge):
    """A leak report over its size limit."""


class SchemaOutdated(TallykeyError):
    status = 503
    code = "schema_outdated"


class SecondFactorPending(Exception):
    """The session passed the password but still awaits its second factor (a code, or
    setting one up where the account requires it): only that page is usable."""

    def __init__(self, awaiting: str) -> None:
        super().__init__(awaiting)
        self.awaiting = awaiting


class SettingsError(ValueError):
    """A setting is unknown or has a value the server cannot use: one line for the
    operator, naming the setting and what it expects (never a secret's value)."""


class SignOnRefused(TallykeyError):
    status = 401
    code = "sso_refused"


class SignatureInvalid(ValueError):
    """A webhook request whose signature header is missing, malformed, stale or wrong."""


class SignatureRefused(TallykeyError):
    status = 401
    code = "invalid_signature"


class TamperedCiphertext(KeyConfigError):
    status = 500
    code = "tampered_ciphertext"


class UnknownRevision(Exception):
    """The store's schema comes from a newer release than this code."""

    def __init__(self, revision: str, head: str) -> None:
        super().__init__(revision)
        self.revision = revision
        self.head = head
