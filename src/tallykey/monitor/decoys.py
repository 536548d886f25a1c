"""Decoy tokens' trips (SPEC §17), written at flush time, never on the request path.

The verifier answers a decoy exactly as an unknown token and only notes the use in
memory (`UsageRecorder.decoy_used`). Each flush writes the uses to `decoy_trips`, one row
per decoy per alert window (`ALERT_WINDOW_SECONDS`), and the first use of a window
raises one alert: a mail to the account's admins and a webhook, with the caller's
address, user agent and path and how many uses there were. A flood of uses in one
window is one alert (the outbox's dedupe key names the window), counted in its row.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from tallykey.monitor.models import DecoyTrip
from tallykey.monitor.usage import DecoyUse
from tallykey.notify import webhooks
from tallykey.notify.notices import Notifier
from tallykey.tokens.models import Token

#: At most one alert per decoy in this many seconds; later uses are counted in its row.
ALERT_WINDOW_SECONDS = 60
MAX_TEXT = 300


def _moment(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp, UTC)


def record_trips(session: Session, notifier: Notifier, uses: dict[str, DecoyUse]) -> int:
    """Write each decoy's uses and raise the alerts that are due; returns how many
    alerts were raised."""
    raised = 0
    for token_id, use in sorted(uses.items()):
        first, last = _moment(use.first_at), _moment(use.last_at)
        agent = use.agent[:MAX_TEXT] if use.agent else None
        path = use.path[:MAX_TEXT] if use.path else None
        current = session.scalar(
            select(DecoyTrip).where(DecoyTrip.token_id == token_id,
                                    DecoyTrip.first_at > first - timedelta(
                                        seconds=ALERT_WINDOW_SECONDS))
            .order_by(DecoyTrip.first_at.desc()).limit(1).with_for_update())
        if current is not None:  # within the window of an alert already raised
            current.count += use.count
            if last >= current.last_at:
                current.last_at, current.ip = last, use.ip[:45]
                current.user_agent, current.path = agent, path
            continue
        previous = session.scalar(select(DecoyTrip).where(DecoyTrip.token_id == token_id)
                                  .order_by(DecoyTrip.first_at.desc()).limit(1))
        session.add(DecoyTrip(token_id=token_id, account_id=use.account_id, first_at=first,
                              last_at=last, count=use.count, ip=use.ip[:45],
                              user_agent=agent, path=path))
        token = session.get(Token, token_id)
        if token is None or token.account_id != use.account_id:
            continue
        raised += 1
        _alert(session, notifier, token, use, first, agent, path, previous)
    return raised


def _alert(session: Session, notifier: Notifier, token: Token, use: DecoyUse,
           first: datetime, agent: str | None, path: str | None,
           previous: DecoyTrip | None) -> None:
    window = int(use.first_at) // ALERT_WINDOW_SECONDS
    lines = [f"Address: {use.ip}", f"User agent: {agent or 'none sent'}",
             f"Path: {path or 'unknown'}"]
    if use.count > 1:
        lines.append(f"It was used {use.count} times in this alert's first moments; "
                     f"further uses within {ALERT_WINDOW_SECONDS} seconds are counted "
                     "in the console, not mailed.")
    if previous is not None:
        lines.append(f"Its previous alert, at {previous.first_at:%Y-%m-%d %H:%M UTC}, "
                     f"counted {previous.count} use(s).")
    notifier.alert(
        session, token, event=webhooks.TOKEN_DECOY_USED,
        notice=f"alert:decoy:{token.id}:{window}",
        at=first, subject=f'Decoy token "{token.name}" was used',
        headline=(f'Someone used the decoy token "{token.name}" at '
                  f"{first:%Y-%m-%d %H:%M:%S UTC} from {use.ip}."),
        lines=lines, to_admins=True, template="token_decoy_used",
        details={"ip": use.ip, "user_agent": agent, "path": path, "count": use.count,
                 "previous_alert_uses": previous.count if previous else None})


def recent_trips(session: Session, account_id: str, limit_per_token: int = 5
                 ) -> dict[str, list[DecoyTrip]]:
    """Per decoy token of the account: its latest trips, newest first (the console)."""
    trips: dict[str, list[DecoyTrip]] = {}
    for trip in session.scalars(select(DecoyTrip).where(DecoyTrip.account_id == account_id)
                                .order_by(DecoyTrip.last_at.desc()).limit(500)):
        kept = trips.setdefault(trip.token_id, [])
        if len(kept) < limit_per_token:
            kept.append(trip)
    return trips
