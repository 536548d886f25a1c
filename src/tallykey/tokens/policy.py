"""The rules a token's fields must follow: pure functions, each raising `ValidationFailed`
with a message that says what to fix. Nothing here touches the database."""

from __future__ import annotations

import contextlib
import ipaddress
import unicodedata
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from tallykey.accounts.scopes import DEMO_CATALOG, ScopeCatalog
from tallykey.controls.rules import Refill, written_rate_limit
from tallykey.errors import PermissionDenied, ValidationFailed
from tallykey.tokens.format import TOKEN_PATTERN

MAX_NAME_LENGTH = 100
MAX_DESCRIPTION_LENGTH = 1000
MAX_TARGET_LENGTH = 100
MAX_ALLOWLIST_ENTRIES = 100
MAX_VALIDITY_CEILING_DAYS = 365
LONG_VALIDITY_WARNING_DAYS = 90
EXPIRY_PRESET_DAYS = (7, 30, 60, 90, 365)
MAX_GRACE_SECONDS = 7 * 24 * 3600

#: Unicode categories refused in names: controls, format characters, unassigned,
#: private use, surrogates, and symbols such as emoji.
_REFUSED_IN_NAMES = {"Cc", "Cf", "Cn", "Co", "Cs", "So", "Sk"}

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def clean_name(value: str | None, field: str = "name") -> str:
    """A required, single-line, human name of at most 100 characters."""
    name = (value or "").strip()
    if not name:
        raise ValidationFailed(f"The {field} is required.", f"Give the token a descriptive {field},"
                               " e.g. 'CRM Integration - Production'.", field=field)
    if len(name) > MAX_NAME_LENGTH:
        raise ValidationFailed(
            f"The {field} is {len(name)} characters long; at most {MAX_NAME_LENGTH} are allowed.",
            "Shorten it; put longer text in the description.",
            field=field,
        )
    refused = sorted({ch for ch in name if unicodedata.category(ch) in _REFUSED_IN_NAMES})
    if refused:
        shown = ", ".join(f"U+{ord(ch):04X}" for ch in refused[:5])
        raise ValidationFailed(
            f"The {field} contains characters that are not allowed ({shown}): emoji, symbols "
            "and control characters cannot be used in names.",
            "Use letters, digits, spaces and punctuation.",
            field=field,
        )
    _refuse_secrets(name, field)
    return " ".join(name.split())


def _refuse_secrets(text: str, field: str) -> None:
    """Names and descriptions are shown everywhere and audited: never a token secret."""
    if TOKEN_PATTERN.search(text):
        raise ValidationFailed(
            f"The {field} contains what looks like a tallykey token secret.",
            "Never paste secrets into names or descriptions; that token should be rotated.",
            field=field)


def clean_description(value: str | None) -> str:
    text = (value or "").strip()
    if len(text) > MAX_DESCRIPTION_LENGTH:
        raise ValidationFailed(
            f"The description is {len(text)} characters long; at most "
            f"{MAX_DESCRIPTION_LENGTH} are allowed.",
            field="description",
        )
    _refuse_secrets(text, "description")
    bad = [ch for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\n\t"]
    if bad:
        raise ValidationFailed(
            "The description contains control characters.", "Remove them.", field="description"
        )
    return text


def clean_target(value: str | None, allowed: Iterable[str]) -> str | None:
    if value is None or not value.strip():
        return None
    target = value.strip()
    choices = list(allowed)
    if choices and target not in choices:
        raise ValidationFailed(
            f"Unknown target software {target!r}.",
            "Choose one of: " + ", ".join(choices) + ".",
            field="target",
        )
    if len(target) > MAX_TARGET_LENGTH:
        raise ValidationFailed("The target software name is too long.", field="target")
    return target


def parse_cidr(entry: str) -> IpNetwork:
    """One allow-list entry: an IPv4/IPv6 address or CIDR block, host bits clear."""
    text = entry.strip() if isinstance(entry, str) else ""
    if not text:
        raise ValidationFailed(
            "An IP allow-list entry is empty.", "Remove it or write an address such as "
            "203.0.113.0/24 or 2001:db8::/32.", field="ip_allowlist"
        )
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise _unreadable_cidr(text) from None
        raise ValidationFailed(
            f"{text!r} has host bits set after the prefix length.",
            f"Did you mean {loose.with_prefixlen}?",
            field="ip_allowlist",
        ) from None


def _unreadable_cidr(text: str) -> ValidationFailed:
    """What is wrong with an entry Python cannot read, said without Python's words."""
    address, slash, length = text.partition("/")
    version: int = 0
    with contextlib.suppress(ValueError):
        version = ipaddress.ip_address(address).version
    if slash and version:
        longest = 32 if version == 4 else 128
        return ValidationFailed(
            f"{text!r} has the prefix length /{length}; an IPv{version} block allows /0 to "
            f"/{longest}.", f"Write e.g. {address}/{24 if version == 4 else 64}.",
            field="ip_allowlist")
    return ValidationFailed(
        f"{text!r} is not an IP address or an address block.",
        "Write an IPv4 or IPv6 address or a block such as 203.0.113.0/24 or 2001:db8::/32.",
        field="ip_allowlist")


def clean_allowlist(entries: Iterable[str] | None) -> list[str]:
    """Validated, de-duplicated CIDRs in their canonical spelling."""
    items = list(entries or [])
    if len(items) > MAX_ALLOWLIST_ENTRIES:
        raise ValidationFailed(
            f"The IP allow-list has {len(items)} entries; at most {MAX_ALLOWLIST_ENTRIES} "
            "are allowed.", "Use wider CIDR blocks.", field="ip_allowlist"
        )
    canonical: list[str] = []
    for entry in items:
        network = parse_cidr(entry).with_prefixlen
        if network not in canonical:
            canonical.append(network)
    return canonical


def clean_scopes(scopes: Iterable[str] | None,
                 catalog: ScopeCatalog = DEMO_CATALOG) -> list[str]:
    """Sorted, de-duplicated scopes; any scope outside the catalog is refused by name."""
    wanted = sorted({s.strip() for s in scopes or [] if isinstance(s, str) and s.strip()})
    unknown = catalog.unknown(wanted)
    if unknown:
        raise ValidationFailed(
            "Unknown scope(s): " + ", ".join(unknown) + ".",
            "Known scopes: " + ", ".join(catalog.names) + " (GET /api/v1/scopes).",
            field="scopes", unknown=unknown,
        )
    return wanted


def resolve_expiry(
    now: datetime,
    *,
    expires_at: datetime | date | None,
    expires_in_days: int | None,
    max_validity_days: int,
) -> datetime:
    """The moment a new token expires. Exactly one of the two inputs must be given.

    A bare date means "valid through that day" (UTC), and is allowed up to the last day of
    the maximum validity. Raises `ValidationFailed` for a missing, past or too distant expiry.
    """
    if expires_at is None and expires_in_days is None:
        raise ValidationFailed(
            "An expiry is required: every token must expire.",
            "Pass expires_in_days (7, 30, 60, 90 or 365) or expires_at (an ISO 8601 date).",
            field="expires_at",
        )
    if expires_at is not None and expires_in_days is not None:
        raise ValidationFailed(
            "Give either expires_at or expires_in_days, not both.", field="expires_at"
        )
    limit = now + timedelta(days=max_validity_days)
    too_far = ValidationFailed(
        f"The expiry is beyond this account's maximum validity of {max_validity_days} days "
        f"(latest allowed: {limit.date().isoformat()}).",
        "Pick an earlier date; renew the token before it expires.",
        field="expires_at",
        max_validity_days=max_validity_days,
    )
    if expires_in_days is not None:
        if isinstance(expires_in_days, bool) or expires_in_days < 1:
            raise ValidationFailed(
                "expires_in_days must be a whole number of days, at least 1.",
                field="expires_in_days",
            )
        if expires_in_days > max_validity_days:
            raise too_far
        return now + timedelta(days=expires_in_days)
    assert expires_at is not None
    if isinstance(expires_at, datetime):
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        if expires_at <= now:
            raise _in_the_past(expires_at.isoformat())
        if expires_at > limit:
            raise too_far
        moment = expires_at.astimezone(UTC)
        if moment <= now:
            raise _in_the_past(moment.isoformat())
        if moment > limit:
            raise too_far
        return moment
    if expires_at > limit.date():  # first: the day after 9999-12-31 does not exist
        raise too_far
    day_end = end_of_day(expires_at)
    if day_end <= now:
        raise _in_the_past(expires_at.isoformat())
    return min(day_end, limit)


def end_of_day(day: date) -> datetime:
    """A bare date as an expiry: valid through that day (UTC), so the next midnight."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)


def validity_warnings(now: datetime, expires_at: datetime) -> list[str]:
    days = (expires_at - now).total_seconds() / 86400
    if days > LONG_VALIDITY_WARNING_DAYS:
        return [
            f"This token is valid for {round(days)} days. Tokens valid for more than 3 months "
            "are discouraged: prefer shorter lifetimes and rotate regularly."
        ]
    return []


#: The rotation grace period when none is given: one day, in the console, the CLI and the
#: API alike.
DEFAULT_GRACE_SECONDS = 86_400


def check_grace(grace_seconds: int) -> int:
    if isinstance(grace_seconds, bool) or not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise ValidationFailed(
            f"grace_seconds must be between 0 and {MAX_GRACE_SECONDS} (7 days).",
            field="grace_seconds",
        )
    return grace_seconds


def _in_the_past(shown: str) -> ValidationFailed:
    return ValidationFailed(
        f"The expiry {shown} is in the past.", "Pick a date in the future.", field="expires_at"
    )


def check_allowlist_within(wanted: list[str], limit: list[str]) -> None:
    """An owner's new allow-list must lie inside the one an administrator set (an empty
    list allows every address, so it is wider than any limit)."""
    if not limit:
        return
    bounds = [ipaddress.ip_network(entry) for entry in limit]
    outside = [entry for entry in wanted if not _inside(ipaddress.ip_network(entry), bounds)]
    if not wanted or outside:
        raise PermissionDenied(
            "An administrator restricted this token to " + ", ".join(limit) + "; you can "
            "narrow that allow-list, not widen or clear it"
            + (f" ({', '.join(outside)} is outside it)." if outside else "."),
            "Ask an administrator to change the token's allow-list.",
            field="ip_allowlist", reason="admin_limit")


def check_scopes_within(wanted: list[str], limit: list[str]) -> None:
    """An owner may drop scopes an administrator left on the token, never add others."""
    beyond = sorted(set(wanted) - set(limit))
    if beyond:
        raise PermissionDenied(
            "An administrator limited this token to the scopes " + ", ".join(limit)
            + "; you cannot add " + ", ".join(beyond) + ".",
            "Ask an administrator to change the token's scopes.",
            field="scopes", reason="admin_limit", refused=beyond)


def check_rate_limits_within(wanted: list[dict[str, Any]],
                             limit: list[dict[str, Any]]) -> None:
    """An owner may lower the rate limits an administrator set and add others, never
    raise or remove one: each of `limit` must stay, with its window and sharing, at most
    as high."""
    mine = {rule["name"]: rule for rule in wanted}
    for rule in limit:
        kept = mine.get(rule["name"])
        if (kept is None or kept["per_seconds"] != rule["per_seconds"]
                or kept.get("shared") != rule.get("shared") or kept["limit"] > rule["limit"]):
            raise PermissionDenied(
                f"An administrator set the rate limit {written_rate_limit(rule)!r} on this "
                "token; you can lower it, not raise, widen or remove it.",
                "Keep that limit (or a lower one with the same window), or ask an "
                "administrator to change it.", field="rate_limits", reason="admin_limit",
                limit=rule["name"])


def check_external_id_kept(limit: list[dict[str, Any]]) -> None:
    """A rate limit an administrator set `shared` by external id is counted per external
    id: an owner who changed the token's external id would get a fresh window."""
    shared = [rule for rule in limit if rule.get("shared") == "external_id"]
    if shared:
        raise PermissionDenied(
            f"An administrator set the rate limit {written_rate_limit(shared[0])!r} on this "
            "token, counted per external id; you cannot change the external id.",
            "Ask an administrator to change the token's external id.",
            field="external_id", reason="admin_limit", limit=shared[0]["name"])


def check_credits_within(wanted: tuple[int, Refill | None] | None, balance: int,
                         limit: dict[str, Any]) -> None:
    """An owner may lower credits an administrator set and their refill, never remove
    them, add to the balance or raise (or add) a refill."""
    imposed = limit.get("refill")
    reason = ""
    if wanted is None:
        reason = "remove them"
    elif wanted[0] > balance:
        reason = f"raise them above the {balance} left"
    elif wanted[1] is not None and (imposed is None or wanted[1].interval != imposed[
            "interval"] or wanted[1].amount > imposed["amount"]):
        reason = "add or raise a refill"
    if reason:
        raise PermissionDenied(
            f"An administrator set this token's usage credits; you can lower them, not "
            f"{reason}.", "Ask an administrator for more credits.", field="credits",
            reason="admin_limit")


def _inside(network: ipaddress.IPv4Network | ipaddress.IPv6Network,
            bounds: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    return any(network.version == bound.version
               and network.subnet_of(bound)  # type: ignore[arg-type]
               for bound in bounds)
