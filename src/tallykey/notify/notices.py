"""What each token event tells whom: picks the recipients, renders the mails from the
Jinja2 templates, and puts them (and the webhook calls) in the outbox.

`Notifier.on_token_event` is a `tallykey.tokens.events.Listener`: the token service calls it
inside the transaction of the change, so a notice exists exactly when its change does.
Mails name a token only by its public prefix, never by its secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import Session

from tallykey.accounts.models import Account, User, Workspace
from tallykey.accounts.permissions import ADMIN
from tallykey.actor import Actor
from tallykey.db.base import new_id
from tallykey.notify import webhooks
from tallykey.notify.models import EMAIL
from tallykey.notify.outbox import Draft, enqueue
from tallykey.tokens.events import (
    TOKEN_APPROVED,
    TOKEN_CREATED,
    TOKEN_DENIED,
    TOKEN_RENEWED,
    TOKEN_RESUMED,
    TOKEN_REVOKED,
    TOKEN_ROTATED,
    TOKEN_SECRET_RETRIEVED,
    TOKEN_SUSPENDED,
    TOKEN_UPDATED,
    TokenEvent,
)
from tallykey.tokens.models import Token

#: `Actor.via` of revocations made because a secret scanner reported the token leaked.
LEAK_REPORT = "leak-report"

#: Outbox events of the governance mails (SPEC §17).
TOKEN_INACTIVE = "token.inactive"  # noqa: S105 - an event name
DIGEST = "account.digest"

#: The stage of the notice sent when a token has expired (the reminders use day counts).
EXPIRED_STAGE = 0

_templates = Environment(
    loader=PackageLoader("tallykey.notify", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_templates.filters["when"] = lambda moment: moment.strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class Mail:
    subject: str
    text: str
    html: str


def render(template: str, subject: str, **context: Any) -> Mail:
    """`template`.txt and `template`.html with the same context."""
    context = {"subject": subject, **context}
    return Mail(subject=subject,
                text=_templates.get_template(f"{template}.txt").render(context),
                html=_templates.get_template(f"{template}.html").render(context))


def in_words(remaining: timedelta) -> str:
    """`in 2 days`, `in 5 hours`: how far away an expiry is, rounded to what matters."""
    hours = remaining.total_seconds() / 3600
    if hours < 1:
        return "in less than an hour"
    if hours < 24:
        count = round(hours)
        return f"in {count} hour{'s' if count != 1 else ''}"
    count = round(hours / 24)
    return f"in {count} day{'s' if count != 1 else ''}"


def active_admins(session: Session, account_id: str) -> list[User]:
    return list(session.scalars(select(User).where(
        User.account_id == account_id, User.role == ADMIN, User.active.is_(True))
        .order_by(User.email)))


def creator_or_admins(session: Session, token: Token) -> list[User]:
    """Who looks after a token: its creator while active; otherwise (an application token
    the operator made, or a creator since deactivated) the account's active admins."""
    if token.created_by_id is not None:
        creator = session.get(User, token.created_by_id)
        if creator is not None and creator.active:
            return [creator]
    return active_admins(session, token.account_id)


class Notifier:
    """Turns token events and due reminders into outbox rows."""

    def __init__(self, *, public_url: str | None = None) -> None:
        self.public_url = public_url.rstrip("/") if public_url else None

    # --- the listener ----------------------------------------------------------------

    def on_token_event(self, session: Session, event: TokenEvent) -> None:
        """Enqueue the mails and webhook calls for `event` in the caller's transaction."""
        token = event.token
        notice = _notice_for(event)
        mails: list[tuple[User, Mail]] = []
        if event.kind == TOKEN_CREATED and token.pending_at is not None:
            facts = self._facts(session, token)
            subject = f'API token "{token.name}" awaits your approval in {facts["account"]}'
            queue_url = f"{self.public_url}/console/approvals" if self.public_url else None
            for admin in active_admins(session, token.account_id):
                mails.append((admin, render("token_pending", subject, recipient=admin,
                                            actor=event.actor, queue_url=queue_url,
                                            **facts)))
        elif event.kind == TOKEN_CREATED:
            facts = self._facts(session, token)
            subject = f'New API token "{token.name}" created in {facts["account"]}'
            for admin in active_admins(session, token.account_id):
                mails.append((admin, render("token_created", subject, recipient=admin,
                                            actor=event.actor, **facts)))
        elif event.kind in (TOKEN_REVOKED, TOKEN_ROTATED):
            facts = self._facts(session, token)
            verb = "revoked" if event.kind == TOKEN_REVOKED else "rotated"
            subject = f'API token "{token.name}" was {verb}'
            recipients = creator_or_admins(session, token)
            if event.actor.via == LEAK_REPORT:  # SPEC §5: the creator and the admins
                subject = f'API token "{token.name}" was leaked and has been revoked'
                known = {user.id for user in recipients}
                recipients += [a for a in active_admins(session, token.account_id)
                               if a.id not in known]
            for user in recipients:
                mails.append((user, render(f"token_{verb}", subject, recipient=user,
                                           actor=event.actor, details=event.details,
                                           **facts)))
        elif event.kind in _TOLD_TO_CREATOR:
            facts = self._facts(session, token)
            verb = _TOLD_TO_CREATOR[event.kind]
            subject = f'API token "{token.name}" was {verb}'
            for user in creator_or_admins(session, token):
                mails.append((user, render(f"token_{verb}", subject, recipient=user,
                                           actor=event.actor, at=event.at,
                                           details=event.details, **facts)))
        elif event.kind == TOKEN_SECRET_RETRIEVED:
            facts = self._facts(session, token)
            subject = f'The secret of API token "{token.name}" was retrieved'
            for admin in active_admins(session, token.account_id):
                if admin.id != event.actor.user_id:  # the other admins are told
                    mails.append((admin, render("token_secret_retrieved", subject,
                                                recipient=admin, actor=event.actor,
                                                at=event.at, **facts)))
        for user, mail in mails:
            self._enqueue_mail(session, token, event.kind, notice, user, mail, event.at)
        self._enqueue_webhooks(session, token, notice=notice, event=event.kind,
                               at=event.at, actor=event.actor, details=event.details)

    # --- reminders -------------------------------------------------------------------

    def expiry_notice(self, session: Session, token: Token, stage: int, now: datetime) -> int:
        """Enqueue the reminder for `stage` days before expiry (or, for `EXPIRED_STAGE`,
        the notice that it has expired); returns how many rows were added."""
        facts = self._facts(session, token)
        if stage == EXPIRED_STAGE:
            event, template = webhooks.TOKEN_EXPIRED, "token_expired"
            notice = f"reminder:{token.id}:expired"
            subject = f'Your API token "{token.name}" has expired'
        else:
            event, template = webhooks.TOKEN_EXPIRING, "token_expiring"
            notice = f"reminder:{token.id}:{stage}"
            subject = (f'Your API token "{token.name}" expires '
                       f"{in_words(token.expires_at - now)}")
        added = 0
        for user in creator_or_admins(session, token):
            mail = render(template, subject, recipient=user, remaining=in_words(
                token.expires_at - now), **facts)
            added += self._enqueue_mail(session, token, event, notice, user, mail, now)
        details: dict[str, Any] = {"expires_at": token.expires_at.isoformat()}
        if stage != EXPIRED_STAGE:
            details["days_before"] = stage
        added += self._enqueue_webhooks(session, token, notice=notice, event=event, at=now,
                                        actor=None, details=details)
        return added

    # --- governance (SPEC §17, run by the worker: `tallykey.governance`) --------------

    def inactivity_warning(self, session: Session, token: Token, *, notice: str,
                           unused_since: datetime, revokes_at: datetime,
                           now: datetime) -> int:
        """Tell the token's owner (its creator, or the admins) that the account's
        inactivity policy revokes it at `revokes_at` unless it is used before. `notice`
        names this stretch of disuse: it is told once. Returns the rows added."""
        facts = self._facts(session, token)
        subject = (f'Your API token "{token.name}" will be revoked '
                   f"{in_words(revokes_at - now)} for inactivity")
        added = 0
        for user in creator_or_admins(session, token):
            mail = render("token_inactive", subject, recipient=user,
                          unused_since=unused_since, revokes_at=revokes_at,
                          never_used=token.last_used_at is None, **facts)
            added += self._enqueue_mail(session, token, TOKEN_INACTIVE, notice, user, mail,
                                        now)
        return added

    def digest(self, session: Session, account: Account, *, notice: str,
               expiring: list[Token], unused: list[Token], now: datetime) -> int:
        """The weekly digest to each active administrator who has not turned it off:
        the account's tokens expiring within 14 days and those never used."""
        subject = f"Weekly token digest for {account.name}"
        console_url = f"{self.public_url}/console/tokens" if self.public_url else None
        added = 0
        for admin in active_admins(session, account.id):
            if not admin.weekly_digest:
                continue
            mail = render("digest", subject, recipient=admin, account=account.name,
                          expiring=expiring, unused=unused, now=now,
                          console_url=console_url, in_words=in_words)
            draft = Draft(channel=EMAIL, event=DIGEST, notice=notice, recipient=admin.email,
                          subject=mail.subject, body=mail.text, html_body=mail.html)
            added += int(enqueue(session, account.id, draft, now))
        return added

    # --- alerts (raised from aggregated usage by `monitor.alerts`) ---------------------

    def alert(self, session: Session, token: Token, *, event: str, notice: str,
              at: datetime, subject: str, headline: str, lines: list[str],
              details: dict[str, Any], to_admins: bool = False,
              webhook: bool = True, template: str = "token_alert") -> int:
        """Mail the token's creator (or the admins; with `to_admins`, the admins) and
        call the webhooks (unless not `webhook`) about a suspicious use. `notice` names
        the incident: the same incident is announced once, however many nodes or
        flushes see it. Returns how many rows were added."""
        facts = self._facts(session, token)
        added = 0
        recipients = (active_admins(session, token.account_id) if to_admins
                      else creator_or_admins(session, token))
        for user in recipients:
            mail = render(template, subject, recipient=user, headline=headline,
                          lines=lines, **facts)
            added += self._enqueue_mail(session, token, event, notice, user, mail, at)
        if webhook:
            added += self._enqueue_webhooks(session, token, notice=notice, event=event,
                                            at=at, actor=None, details=details)
        return added

    # --- internals -------------------------------------------------------------------

    def _facts(self, session: Session, token: Token) -> dict[str, Any]:
        account = session.get_one(Account, token.account_id)
        creator = session.get(User, token.created_by_id) if token.created_by_id else None
        workspace = session.get(Workspace, token.workspace_id) if token.workspace_id else None
        console_url = (f"{self.public_url}/console/tokens/{token.id}"
                       if self.public_url else None)
        return {
            "account": account.name,
            "token": token,
            "creator": creator.email if creator else "the operator (command line)",
            "workspace": workspace.name if workspace else None,
            "console_url": console_url,
            "revoke_url": f"{console_url}/revoke" if console_url else None,
            "renew_url": f"{console_url}/renew" if console_url else None,
        }

    def _enqueue_mail(self, session: Session, token: Token, event: str, notice: str,
                      user: User, mail: Mail, at: datetime) -> int:
        draft = Draft(channel=EMAIL, event=event, notice=notice, recipient=user.email,
                      subject=mail.subject, body=mail.text, html_body=mail.html,
                      token_id=token.id)
        return int(enqueue(session, token.account_id, draft, at))

    def _enqueue_webhooks(self, session: Session, token: Token, *, notice: str, event: str,
                          at: datetime, actor: Actor | None, details: dict[str, Any]) -> int:
        added = 0
        for draft in webhooks.drafts_for(session, token, notice=notice, event=event,
                                         occurred_at=at, actor=actor, details=details):
            added += int(enqueue(session, token.account_id, draft, at))
        return added


#: Events mailed to the token's creator (or the admins), with their template's verb.
_TOLD_TO_CREATOR = {TOKEN_SUSPENDED: "suspended", TOKEN_RESUMED: "resumed",
                    TOKEN_RENEWED: "renewed", TOKEN_APPROVED: "approved",
                    TOKEN_DENIED: "denied"}


def _notice_for(event: TokenEvent) -> str:
    """A key that is the same however often the same event is announced, and different
    for every distinct event (updates and rotations happen more than once)."""
    token_id = event.token.id
    if event.kind == TOKEN_ROTATED:
        return f"{event.kind}:{token_id}:{event.details.get('generation', event.at.isoformat())}"
    if event.kind in (TOKEN_UPDATED, TOKEN_SECRET_RETRIEVED, TOKEN_SUSPENDED, TOKEN_RESUMED):
        return f"{event.kind}:{token_id}:{new_id()}"
    return f"{event.kind}:{token_id}"
