"""The rules a token carries (SPEC §13) and their validation: named rate limits, usage
credits with an optional refill, metadata and an external id. Plain data and pure
functions: the service, the verifier and every surface share them."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard

from tallykey.errors import ValidationFailed

#: Who shares one counter: the token alone (None), all tokens of its owner, or all
#: tokens of the account with the same external id.
SHARED = ("owner", "external_id")
#: `RateRule.shared` of an identity's rate limits (SPEC §16): one counter for all the
#: identity's tokens. Set by the lookup, never accepted as input on a token's limit.
IDENTITY_SHARED = "identity"
INTERVALS = ("daily", "monthly")
MAX_LIMITS = 10
MAX_LIMIT = 1_000_000_000
MAX_PER_SECONDS = 30 * 86_400
MAX_CREDITS = 1_000_000_000_000
MAX_METADATA_BYTES = 4096
MAX_EXTERNAL_ID = 255
#: `Tallykey-Cost` on `/auth/request`: what one request costs in credits.
MAX_COST = 1000
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
#: `NAME=LIMIT/SECONDS[:owner|:external_id]`, the written form (CLI, console).
_WRITTEN = re.compile(r"(?:([^=\s]+)=)?(\d{1,10})/(\d{1,10})(?::(owner|external_id))?")


@dataclass(frozen=True, slots=True)
class RateRule:
    """`limit` requests per `per_seconds` (fixed windows), counted for the token alone
    or shared by its owner's or its external id's tokens."""

    name: str
    limit: int
    per_seconds: int
    shared: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "limit": self.limit, "per_seconds": self.per_seconds,
                "shared": self.shared}


@dataclass(frozen=True, slots=True)
class Refill:
    """Credits set back to `amount` at every period start (00:00 UTC; monthly: the 1st)."""

    amount: int
    interval: str

    def as_dict(self) -> dict[str, Any]:
        return {"amount": self.amount, "interval": self.interval}


def clean_rate_limits(entries: Sequence[Mapping[str, Any]]) -> list[RateRule]:
    """Validated rate limits; `ValidationFailed` (field `rate_limits`) naming the bad one."""
    if len(entries) > MAX_LIMITS:
        raise ValidationFailed(f"A token takes at most {MAX_LIMITS} rate limits.",
                               field="rate_limits")
    rules: list[RateRule] = []
    for entry in entries:
        name = str(entry.get("name") or "default").strip().lower()
        if not _NAME.fullmatch(name):
            raise ValidationFailed(
                f"Rate limit name {name[:40]!r} is not allowed.",
                "Use 1-32 lowercase letters, digits, '.', '_' or '-', e.g. 'default'.",
                field="rate_limits")
        if any(rule.name == name for rule in rules):
            raise ValidationFailed(f"Two rate limits are named {name!r}.",
                                   "Give each limit its own name.", field="rate_limits")
        limit, per_seconds = entry.get("limit"), entry.get("per_seconds")
        if not _whole(limit) or not 1 <= limit <= MAX_LIMIT:
            raise ValidationFailed(
                f"Rate limit {name!r}: limit must be a whole number from 1 to {MAX_LIMIT}.",
                "To stop a token entirely, revoke it.", field="rate_limits")
        if not _whole(per_seconds) or not 1 <= per_seconds <= MAX_PER_SECONDS:
            raise ValidationFailed(
                f"Rate limit {name!r}: per_seconds must be a whole number from 1 to "
                f"{MAX_PER_SECONDS} (30 days).", field="rate_limits")
        shared = entry.get("shared")
        if shared is not None and shared not in SHARED:
            raise ValidationFailed(
                f"Rate limit {name!r}: shared must be null, 'owner' or 'external_id'.",
                field="rate_limits")
        rules.append(RateRule(name, limit, per_seconds, shared))
    return rules


def parse_rate_limit(text: str) -> dict[str, Any]:
    """A rate limit written `NAME=LIMIT/SECONDS[:owner|:external_id]` (e.g.
    `default=100/60`, `customer=1000/3600:external_id`; `NAME=` may be left out:
    `default`), as `clean_rate_limits` takes it."""
    found = _WRITTEN.fullmatch(text.strip())
    if found is None:
        raise ValidationFailed(
            f"Rate limit {text.strip()[:60]!r} is not of the form NAME=LIMIT/SECONDS.",
            "Write e.g. default=100/60 (100 requests per 60 seconds); add :owner or "
            ":external_id to share it.", field="rate_limits")
    name, limit, per_seconds, shared = found.groups()
    return {"name": name or "default", "limit": int(limit), "per_seconds": int(per_seconds),
            "shared": shared}


def written_rate_limit(rule: Mapping[str, Any]) -> str:
    """A rate limit in its written form (`parse_rate_limit` reads it back)."""
    shared = f":{rule['shared']}" if rule.get("shared") else ""
    return f"{rule['name']}={rule['limit']}/{rule['per_seconds']}{shared}"


def clean_credits(remaining: Any, refill: Mapping[str, Any] | None) -> tuple[int, Refill | None]:
    """Validated credits: the remaining count and the refill, if any."""
    if not _whole(remaining) or not 0 <= remaining <= MAX_CREDITS:
        raise ValidationFailed(f"credits.remaining must be a whole number from 0 to "
                               f"{MAX_CREDITS}.", field="credits")
    if refill is None:
        return remaining, None
    amount, interval = refill.get("amount"), refill.get("interval")
    if not _whole(amount) or not 1 <= amount <= MAX_CREDITS:
        raise ValidationFailed(f"credits.refill.amount must be a whole number from 1 to "
                               f"{MAX_CREDITS}.", field="credits")
    if interval not in INTERVALS:
        raise ValidationFailed("credits.refill.interval must be 'daily' or 'monthly'.",
                               field="credits")
    return remaining, Refill(amount, interval)


def clean_metadata(value: Any) -> dict[str, Any] | None:
    """A JSON object of at most 4 KB (compact UTF-8), or None for an empty one."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationFailed("metadata must be a JSON object ({...}).",
                               "Wrap the values in an object, e.g. {\"plan\": \"pro\"}.",
                               field="metadata")
    try:
        size = len(serialise_metadata(value).encode())
    except (ValueError, TypeError, RecursionError):
        raise ValidationFailed("metadata must be plain JSON: no NaN or Infinity, and not "
                               "nested this deep.", field="metadata") from None
    if size > MAX_METADATA_BYTES:
        raise ValidationFailed(
            f"metadata is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are allowed.",
            "Keep an id in metadata and the rest in your own store.", field="metadata")
    return value or None


def serialise_metadata(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True,
                      allow_nan=False)


def clean_external_id(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > MAX_EXTERNAL_ID or not value.isprintable():
        raise ValidationFailed(f"external_id must be 1 to {MAX_EXTERNAL_ID} printable "
                               "characters.", field="external_id")
    return value


def parse_cost(text: str) -> int | None:
    """A `Tallykey-Cost` header value (a whole number 0 to 1000), or None if malformed."""
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 4:
        return None
    cost = int(text)
    return cost if cost <= MAX_COST else None


def period_of(interval: str, ts: float) -> int:
    """The refill period POSIX time `ts` falls in: days, or months, since 1970 (UTC)."""
    if interval == "daily":
        return int(ts // 86_400)
    moment = datetime.fromtimestamp(ts, UTC)
    return (moment.year - 1970) * 12 + moment.month - 1


def period_start(interval: str, period: int) -> datetime:
    """When refill period `period` begins (UTC)."""
    if interval == "daily":
        return datetime.fromtimestamp(period * 86_400, UTC)
    return datetime(1970 + period // 12, period % 12 + 1, 1, tzinfo=UTC)


def _whole(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
