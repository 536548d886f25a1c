"""The audit page's filters (form values) as the one audit query (`tallykey.audit.query`),
which the page and its CSV/JSON-lines exports read. Always within the viewer's account."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from tallykey.audit.query import AuditQuery, end_of, start_of
from tallykey.errors import NotFound, ValidationFailed
from tallykey.tokens.service import TokenService


@dataclass(frozen=True)
class AuditFilter:
    actor: str = ""
    token: str = ""
    action: str = ""
    since: str = ""
    until: str = ""

    def as_params(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}

    def query(self, tokens: TokenService, account_id: str) -> AuditQuery:
        """The query; `ValidationFailed` names a date field that is not a date. A token
        is named by its id or its prefix (`tlk_eu1_…`)."""
        since, until = _day(self.since, "since"), _day(self.until, "until")
        return AuditQuery(account_id, action=self.action or None,
                          target_id=_token_id(tokens, account_id, self.token.strip()),
                          actor_id=self.actor or None,
                          since=start_of(since) if since else None,
                          until=end_of(until) if until else None)


def _day(value: str, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValidationFailed(f"{name} must be a date (YYYY-MM-DD).", field=name) from None


def _token_id(tokens: TokenService, account_id: str, ref: str) -> str | None:
    """The id of the account's token named `ref`; `ref` itself when there is none (so
    the filter finds nothing rather than another account's entries)."""
    if not ref:
        return None
    try:
        owner, token_id = tokens.locate(ref)
    except NotFound:
        return ref
    return token_id if owner == account_id else ref
