"""Every error tallykey raises: each knows its HTTP status, its error code and what to fix.

Errors are mapped to responses in exactly one place (`tallykey.api.responses`); the CLI
prints `message` (and `hint`) as one line. Messages never contain a token secret.
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


class TallykeyError(Exception):
    """Base of every error the product raises on purpose."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "invalid_request"

    def __init__(self, message: str, hint: str = "", **details: Any) -> None:
        message, hint = mask_secrets(message), mask_secrets(hint)
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = {key: mask_secrets(value) if isinstance(value, str) else value
                        for key, value in details.items()}

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.hint:
            body["hint"] = self.hint
        body.update(self.details)
        return body

    def headers(self) -> dict[str, str]:
        """Response headers every answer to this error carries (e.g. `Retry-After`)."""
        return {}


class StoreUnavailable(TallykeyError):
    """The token store (database) cannot be reached or cannot take writes right now:
    a connection failure, a timeout, a full disk or a read-only store. Nothing changed."""

    status = 503
    code = "store_unavailable"

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


# --- authentication errors (SPEC §3 table) ------------------------------------------


class AuthenticationError(TallykeyError):
    """A request's credentials were refused. `code` is the RFC 6750 error code."""

    status = 401
    code = "invalid_token"


class MissingCredentials(AuthenticationError):
    """No Authorization header: RFC 6750 §3.1 says the challenge carries no error code."""

    code = ""

    def as_dict(self) -> dict[str, Any]:
        body = super().as_dict()
        body["error"] = "missing_token"
        return body


class MalformedHeader(AuthenticationError):
    status = 400
    code = "invalid_request"


class TokenFormatError(AuthenticationError):
    """The token string itself is malformed (checksum, length, characters); no lookup made."""

    def __init__(self, message: str, hint: str = "", *, reason: str) -> None:
        super().__init__(message, hint, reason=reason)
        self.reason = reason


class WrongRegion(AuthenticationError):
    pass


class UnknownToken(AuthenticationError):
    pass


class RevokedToken(AuthenticationError):
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
            error="token_suspended", reason=self.reason,
            suspended_at=suspended_at.isoformat(), suspended_by=suspended_by,
        )


class ExpiredToken(AuthenticationError):
    def __init__(self, expired_at: datetime) -> None:
        super().__init__(
            f"Token Expired: this token expired at {expired_at.isoformat()}.",
            "Expiry cannot be extended: renew the token before it expires (a successor "
            "with a new expiry), or create a new one, and update your integration.",
            expired_at=expired_at.isoformat(),
        )


class OwnerInactive(AuthenticationError):
    pass


class IpNotAllowed(AuthenticationError):
    status = 403
    code = "ip_not_allowed"


class InsufficientScope(AuthenticationError):
    status = 403
    code = "insufficient_scope"

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


class WorkspaceArchived(AuthenticationError):
    """The token belongs to a workspace that was archived: it stopped with it."""


class AccountSuspended(AuthenticationError):
    """The token's account was suspended by the platform's operator."""


class TooManyAttempts(AuthenticationError):
    status = 429
    code = "too_many_attempts"

    def __init__(self, retry_after: int,
                 message: str = "Too many failed authentication attempts from this address."
                 ) -> None:
        super().__init__(
            message,
            f"Wait {retry_after} seconds before trying again.",
            retry_after=retry_after,
        )
        self.retry_after = retry_after


# --- console sign-in (SPEC §12) -------------------------------------------------------


class LinkRefused(TallykeyError):
    """A password-reset link that is unknown, used, expired or for a deactivated user."""

    status = 410
    code = "link_refused"


class SecondFactorRefused(TallykeyError):
    """A wrong, replayed or too old authenticator code (or an unknown recovery code)."""

    status = 401
    code = "second_factor_refused"
