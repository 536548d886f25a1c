"""Act on a verified leak report: revoke each live token it names, audit it, and label it.

A reported string is a *true positive* when it is a real token of this deployment, whether
revoked now, revoked before, expired, or an old secret already rotated out. Anything else
(malformed, failing its checksum, another region's, unknown here) is a *false positive*.

A live token is revoked through `TokenService.revoke`, so it is audited as `token.revoked`
and fires the `TOKEN_REVOKED` event the notification outbox turns into mails; a second
entry, `token.leak_reported`, records where the token was found. A secret still inside a
rotation grace period is live: the whole token is revoked. Tokens are never logged; only
their public prefix is.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select

from tallykey.actor import Actor
from tallykey.audit import trail
from tallykey.errors import Conflict, TokenFormatError
from tallykey.notify.notices import LEAK_REPORT
from tallykey.runtime import Runtime
from tallykey.tokens import format as token_format
from tallykey.tokens.format import TOKEN_PATTERN, parse
from tallykey.tokens.models import Token, TokenSecret

log = logging.getLogger(__name__)

TOKEN_LEAK_REPORTED = "token.leak_reported"  # noqa: S105 - an audit action name
TRUE_POSITIVE = "true_positive"
FALSE_POSITIVE = "false_positive"
MAX_REASON_LENGTH = 500

#: What happened to a real token: the `outcome` in its `token.leak_reported` audit entry.
REVOKED = "revoked"
ALREADY_REVOKED = "already_revoked"
EXPIRED = "expired"
SECRET_RETIRED = "secret_retired"  # noqa: S105 - an outcome name


@dataclass(frozen=True)
class ReportedToken:
    """One entry of a report, as the scanner sent it."""

    token: str
    type: str
    url: str = ""
    source: str = ""


@dataclass(frozen=True)
class Label:
    """The answer for one entry, in the partner format (`as_partner()`)."""

    token_raw: str
    token_type: str
    label: str
    token_id: str | None = None
    outcome: str | None = None

    def as_partner(self) -> dict[str, str]:
        return {"token_raw": self.token_raw, "token_type": self.token_type,
                "label": self.label}


@dataclass(frozen=True)
class _Found:
    token_id: str
    account_id: str
    prefix: str
    revoked_at: datetime | None
    expires_at: datetime
    retires_at: datetime | None


class LeakReports:
    """`process(reports)`: revoke, audit and label; the one verb of leak handling."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.region = runtime.settings.region

    def process(self, reports: Sequence[ReportedToken], *, reporter: str,
                reporter_ip: str | None) -> list[Label]:
        """One label per entry, in order. `reporter` (the signing key's identifier) and
        `reporter_ip` go into the audit trail."""
        return [self._one(item, reporter, reporter_ip) for item in reports]

    def _one(self, item: ReportedToken, reporter: str, reporter_ip: str | None) -> Label:
        false_positive = Label(item.token, item.type, FALSE_POSITIVE)
        try:
            parsed = parse(item.token)
        except TokenFormatError:
            return false_positive
        if parsed.region != self.region:
            log.info("leak report for %s: region %s is another deployment's, not judged here",
                     parsed.prefix, parsed.region)
            return false_positive
        found = self._find(parsed.secret_hash)
        if found is None:
            return false_positive
        actor = replace(Actor.operator(found.account_id), label="Secret scanning",
                        via=LEAK_REPORT, ip=reporter_ip)
        url = shown_url(item.url)
        with self.runtime.database.transaction() as session:  # revoke and audit: one unit
            outcome = self._stop(found, actor, url)
            trail.record(session, actor=actor, action=TOKEN_LEAK_REPORTED,
                         at=self.runtime.clock.now(), target_type="token",
                         target_id=found.token_id,
                         details={"prefix": found.prefix, "url": url,
                                  "source": item.source[:200], "type": item.type[:200],
                                  "reporter": reporter[:200], "outcome": outcome})
        log.warning("leaked token reported: %s at %s: %s", found.prefix, url, outcome)
        return Label(item.token, item.type, TRUE_POSITIVE, found.token_id, outcome)

    def _stop(self, found: _Found, actor: Actor, url: str) -> str:
        """Revoke the reported token. `url` is already safe to keep (see `shown_url`):
        nothing in a report's free text may stop a valid report from revoking."""
        now = self.runtime.clock.now()
        if found.revoked_at is not None:
            return ALREADY_REVOKED
        if found.expires_at <= now:
            return EXPIRED
        if found.retires_at is not None and found.retires_at <= now:
            return SECRET_RETIRED
        reason = f"reported leaked: {url}"[:MAX_REASON_LENGTH]
        try:
            self.runtime.tokens.revoke(actor, found.token_id, reason)
        except Conflict:  # revoked meanwhile (a concurrent report, an admin)
            return ALREADY_REVOKED
        return REVOKED

    def _find(self, secret_hash: str) -> _Found | None:
        statement = (select(Token.id, Token.account_id, Token.region, Token.public_id,
                            Token.revoked_at, Token.expires_at, TokenSecret.retires_at)
                     .join(TokenSecret, TokenSecret.token_id == Token.id)
                     .where(TokenSecret.secret_hash == secret_hash,
                            Token.region == self.region))
        with self.runtime.database.reading() as session:
            row = session.execute(statement).first()
        if row is None:
            return None
        token_id, account_id, region, public_id, revoked_at, expires_at, retires_at = row
        return _Found(token_id, account_id, token_format.prefix(region, public_id), revoked_at,
                      expires_at, retires_at)


def shown_url(url: str) -> str:
    """The report's `url` as it may be kept and shown: token-shaped strings (the leaked
    secret itself, often) redacted, control characters replaced, at most 2,048 characters."""
    text = TOKEN_PATTERN.sub("[redacted token]", url)
    text = "".join("?" if unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in text)
    return text.strip()[:2048]
