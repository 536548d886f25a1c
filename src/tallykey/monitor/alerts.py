"""Alerts raised from aggregated usage at flush time, never on the request path:

- a token used from a network it was never used from before (`/24` IPv4 and `/48` IPv6
  by default; accounts can turn it off with `new_network_alerts`). A token's very first
  network is its baseline, not an alert: its creation was announced already;
- a spike of refused requests for one token (`TALLYKEY_ALERT_DENIED_THRESHOLD` in one
  hour, summed over every node). An incident that goes on into the next hour is the same
  incident, so it is announced once;
- a token used from many networks at once: `TALLYKEY_ALERT_NETWORKS_AT_ONCE` distinct
  networks within `CROWD_WINDOW_SECONDS`, as one node sees them (a load balancer spreads
  each network's requests over the nodes, so each sees the crowd). Once per token per
  hour;
- a rotated-out secret still in use during its grace period: it is about to stop working;
- a decoy token was used (`monitor.decoys`).

With the account policy `contain: suspend`, a new-network, many-networks or refusal-burst
alert also suspends its token (`monitor.containment`), once the flush has committed.

Each alert is one outbox notice (mail to the token's creator, or the admins, and the
account's webhooks) whose name identifies the incident, so the outbox's dedupe keys make
it one mail however many nodes and flushes see it. Denied authentications are written to
the audit trail here too: one entry per token, client IP and reason per flush.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tallykey.accounts.models import Account
from tallykey.audit import trail
from tallykey.clock import Clock
from tallykey.db.engine import Database
from tallykey.errors import RateLimited, RotatedOut, TokenSuspended, UsageExhausted
from tallykey.feed.clock import DatabaseClock
from tallykey.monitor.containment import Containment, Incident
from tallykey.monitor.decoys import record_trips
from tallykey.monitor.models import TokenNetwork, TokenUsage
from tallykey.monitor.usage import ALLOWED, Batch
from tallykey.notify import webhooks
from tallykey.notify.notices import Notifier
from tallykey.settings import Settings
from tallykey.tokens import format as token_format
from tallykey.tokens.models import Token

log = logging.getLogger(__name__)

_CHUNK = 400
#: Known (token, network) pairs remembered in memory, so a busy token's network is written
#: at most once a day per node rather than on every flush.
_KNOWN_LIMIT = 200_000
#: Refusals that do not count towards containing a token (SPEC §17): those of a token
#: suspended already (a containment, say); those of a secret a rotation or renewal
#: retired — whoever holds a leaked secret the owner rotated away must not be able to
#: suspend the token's live secret with it; and the token's own rate limits and credits
#: at work (a busy client backing off meets many). They still count for the spike alert.
_NOT_CONTAINING = (TokenSuspended.reason, RotatedOut.reason, RateLimited.reason,
                   UsageExhausted.reason)
#: "Many networks at once" counts the distinct networks of this many seconds.
CROWD_WINDOW_SECONDS = 60


def network_of(ip: str, v4_prefix: int, v6_prefix: int) -> str | None:
    """The network an address belongs to for "new network" purposes, e.g. `203.0.113.0/24`;
    None for something that is not an IP address."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = v4_prefix if address.version == 4 else v6_prefix
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def _moment(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp, UTC)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


class UsageMonitor:
    """The `FlushObserver` of the verifier's usage recorder."""

    def __init__(self, database: Database, settings: Settings, notifier: Notifier,
                 clock: Clock | None = None,
                 database_clock: DatabaseClock | None = None) -> None:
        self.database = database
        self.notifier = notifier
        #: Suspends the tokens alerts name, in accounts whose policy says so.
        self.containment = (Containment(database, settings, notifier, clock, database_clock)
                            if clock is not None and database_clock is not None else None)
        self._incidents: list[Incident] = []
        self.v4_prefix = settings.alert_network_prefix_v4
        self.v6_prefix = settings.alert_network_prefix_v6
        self.denied_threshold = settings.alert_denied_threshold
        self.networks_at_once = settings.alert_networks_at_once
        self._known: dict[tuple[str, str], int] = {}
        #: Per token: when this node last saw it use each network (within the window),
        #: and the hour it was last announced as crowded.
        self._crowds: dict[str, dict[str, float]] = {}
        self._crowded: dict[str, int] = {}
        self._crowding: dict[str, int] = {}  # announced in the flush being written
        self._crowds_pruned = 0.0

    def after_flush(self, batch: Batch) -> None:
        if not (batch.uses or batch.denials or batch.old_secrets or batch.decoys):
            return
        self._incidents, self._crowding = [], {}
        with self.database.transaction() as session:
            written = self._new_networks(session, batch)
            self._many_networks(session, batch)
            self._denied_spikes(session, batch)
            self._old_secrets(session, batch)
            self._audit_denials(session, batch)
            if batch.decoys:
                record_trips(session, self.notifier, batch.decoys)
        if len(self._known) > _KNOWN_LIMIT:
            self._known.clear()
        self._known.update(written)
        self._crowded.update(self._crowding)  # announced: once per token and hour
        if self._incidents and self.containment is not None:
            self.containment.start(self._incidents)
        self._incidents = []

    def _contain(self, session: Session, token: Token, alert: str, summary: str) -> None:
        """Note the incident for containment, if the token's account asks for it."""
        if Containment.applies(session.get_one(Account, token.account_id)):
            self._incidents.append(Incident(token.id, token.account_id, alert, summary))

    # --- new networks ---------------------------------------------------------------------

    def _new_networks(self, session: Session, batch: Batch) -> dict[tuple[str, str], int]:
        first: dict[tuple[str, str], tuple[float, str]] = {}
        for (token_id, ip), (at, _) in batch.uses.items():
            network = network_of(ip, self.v4_prefix, self.v6_prefix)
            if network is None:
                continue
            key = (token_id, network)
            if key not in first or at < first[key][0]:
                first[key] = (at, ip)
        todo = {key: use for key, use in first.items()
                if self._known.get(key) != int(use[0]) // 86400}
        if not todo:
            return {}
        tokens = sorted({token_id for token_id, _ in todo})
        before: dict[str, set[str]] = defaultdict(set)
        for start in range(0, len(tokens), _CHUNK):
            for token_id, network in session.execute(
                    select(TokenNetwork.token_id, TokenNetwork.network)
                    .where(TokenNetwork.token_id.in_(tokens[start:start + _CHUNK]))):
                before[token_id].add(network)
        fresh = [{"token_id": t, "network": n, "first_seen_at": _moment(at),
                  "last_seen_at": _moment(at)}
                 for (t, n), (at, _) in sorted(todo.items()) if n not in before[t]]
        inserted: set[tuple[str, str]] = set()
        postgres = session.get_bind().dialect.name == "postgresql"
        for start in range(0, len(fresh), _CHUNK):
            insert: Any = (postgresql.insert if postgres else sqlite.insert)(TokenNetwork)
            inserted.update((str(t), str(n)) for t, n in session.execute(
                insert.values(fresh[start:start + _CHUNK])
                .on_conflict_do_nothing(index_elements=["token_id", "network"])
                .returning(TokenNetwork.token_id, TokenNetwork.network)))
        seen_again = [{"t": t, "n": n, "at": _moment(at)}
                      for (t, n), (at, _) in sorted(todo.items()) if n in before[t]]
        if seen_again:
            session.connection().execute(
                update(TokenNetwork).where(and_(
                    TokenNetwork.token_id == bindparam("t"),
                    TokenNetwork.network == bindparam("n"),
                    TokenNetwork.last_seen_at < bindparam("at")))
                .values(last_seen_at=bindparam("at")), seen_again)
        for token_id, network in sorted(inserted):
            if before[token_id]:  # a token's first network is its baseline
                at, ip = todo[(token_id, network)]
                self._alert_new_network(session, token_id, network, ip, _moment(at),
                                        sorted(before[token_id]))
        return {key: int(at) // 86400 for key, (at, _) in todo.items()}

    def _alert_new_network(self, session: Session, token_id: str, network: str, ip: str,
                           at: datetime, known: list[str]) -> None:
        token = session.get_one(Token, token_id)
        if not session.get_one(Account, token.account_id).new_network_alerts:
            return
        self._contain(session, token, "new_network",
                      f"It was used from {ip} (network {network}) for the first time.")
        shown = ", ".join(known[:5]) + (f" and {len(known) - 5} more" if len(known) > 5
                                        else "")
        self.notifier.alert(
            session, token, event=webhooks.TOKEN_NEW_NETWORK,
            notice=f"alert:new_network:{token.id}:{network}", at=at,
            subject=f'API token "{token.name}" was used from a new network',
            headline=(f'The API token "{token.name}" was used from {ip} (network {network}) '
                      f"for the first time, at {_when(at)}."),
            lines=[f"Until now it had been used only from: {shown}."],
            details={"ip": ip, "network": network, "known_networks": known[:20]})

    # --- many networks at once -----------------------------------------------------------

    def _many_networks(self, session: Session, batch: Batch) -> None:
        if self.networks_at_once <= 0 or not batch.uses:
            return
        touched: set[str] = set()
        newest = 0.0
        for (token_id, ip), (at, _) in batch.uses.items():
            network = network_of(ip, self.v4_prefix, self.v6_prefix)
            if network is None:
                continue
            seen = self._crowds.setdefault(token_id, {})
            if seen.get(network, 0.0) < at:
                seen[network] = at
            touched.add(token_id)
            newest = max(newest, at)
        horizon = newest - CROWD_WINDOW_SECONDS
        for token_id in sorted(touched):
            seen = {n: at for n, at in self._crowds[token_id].items() if at > horizon}
            self._crowds[token_id] = seen
            hour = int(newest) // 3600
            if len(seen) < self.networks_at_once or self._crowded.get(token_id) == hour:
                continue
            self._crowding[token_id] = hour
            self._alert_crowd(session, token_id, sorted(seen), _moment(newest), hour)
        if newest - self._crowds_pruned > CROWD_WINDOW_SECONDS or len(
                self._crowds) > _KNOWN_LIMIT:
            self._crowds = {t: seen for t, seen in self._crowds.items()
                            if max(seen.values(), default=0.0) > horizon}
            self._crowded = {t: h for t, h in self._crowded.items()
                             if h >= int(newest) // 3600}
            self._crowds_pruned = newest

    def _alert_crowd(self, session: Session, token_id: str, networks: list[str],
                     at: datetime, hour: int) -> None:
        token = session.get_one(Token, token_id)
        shown = ", ".join(networks[:10]) + (f" and {len(networks) - 10} more"
                                            if len(networks) > 10 else "")
        self._contain(session, token, "many_networks",
                      f"It was used from {len(networks)} networks within "
                      f"{CROWD_WINDOW_SECONDS} seconds.")
        self.notifier.alert(
            session, token, event=webhooks.TOKEN_MANY_NETWORKS,
            notice=f"alert:many_networks:{token.id}:{hour}", at=at,
            subject=f'API token "{token.name}" was used from many networks at once',
            headline=(f'The API token "{token.name}" was used from {len(networks)} '
                      f"different networks within {CROWD_WINDOW_SECONDS} seconds, up to "
                      f"{_when(at)}."),
            lines=[f"Networks: {shown}.",
                   "One integration rarely calls from so many places at once: the token "
                   "may have leaked."],
            details={"networks": networks[:20], "count": len(networks),
                     "window_seconds": CROWD_WINDOW_SECONDS,
                     "threshold": self.networks_at_once})

    # --- denied spikes --------------------------------------------------------------------

    def _denied_spikes(self, session: Session, batch: Batch) -> None:
        if self.denied_threshold <= 0:
            return
        touched = sorted({(token_id, hour) for token_id, hour, outcome in batch.counts
                          if outcome != ALLOWED})
        for token_id, hour in touched:
            start = _moment(hour * 3600)
            previous = start - timedelta(hours=1)
            rows = session.execute(
                select(TokenUsage.hour, TokenUsage.outcome, TokenUsage.count)
                .where(TokenUsage.token_id == token_id, TokenUsage.outcome != ALLOWED,
                       TokenUsage.hour.in_([previous, start])))
            by_reason: dict[str, int] = defaultdict(int)
            earlier = 0
            for row_hour, outcome, count in rows:
                if row_hour == start:
                    by_reason[outcome] += int(count)
                else:
                    earlier += int(count)
            total = sum(by_reason.values())
            if total < self.denied_threshold or earlier >= self.denied_threshold:
                continue  # below the threshold, or an incident announced the hour before
            token = session.get_one(Token, token_id)
            counted = total - sum(by_reason.get(r, 0) for r in _NOT_CONTAINING)
            flushed = sum(count for (t, h, outcome), count in batch.counts.items()
                          if t == token_id and h == hour and outcome != ALLOWED
                          and outcome not in _NOT_CONTAINING)
            if counted >= self.denied_threshold > counted - flushed:
                # contained once, by the flush whose refusals cross the threshold: a later
                # flush of the same hour would suspend it again right after an
                # administrator resumed it
                self._contain(session, token, "denied_spike",
                              f"{total} of its requests were refused in the hour from "
                              f"{_when(start)}.")
            reasons = ", ".join(f"{reason}: {count}" for reason, count
                                in sorted(by_reason.items(), key=lambda item: -item[1]))
            self.notifier.alert(
                session, token, event=webhooks.TOKEN_DENIED_SPIKE,
                notice=f"alert:denied_spike:{token.id}:{start.isoformat()}",
                at=max([start, *(_moment(d.last_at) for (t, _, _), d in batch.denials.items()
                                 if t == token_id)]),
                subject=f'Many refused requests with API token "{token.name}"',
                headline=(f'{total} requests with the API token "{token.name}" were refused '
                          f"in the hour from {_when(start)} (alert threshold: "
                          f"{self.denied_threshold})."),
                lines=[f"Reasons: {reasons}.",
                       "Someone may be trying a leaked, revoked or expired token, or an "
                       "integration may be misconfigured."],
                details={"hour": start.isoformat(), "denied": total,
                         "by_reason": dict(by_reason), "threshold": self.denied_threshold})

    # --- old secrets in their grace period ------------------------------------------------

    def _old_secrets(self, session: Session, batch: Batch) -> None:
        for token_id, use in sorted(batch.old_secrets.items()):
            token = session.get_one(Token, token_id)
            retires = _moment(use.retires_at)
            at = _moment(use.at)
            self.notifier.alert(
                session, token, event=webhooks.TOKEN_OLD_SECRET_USED,
                notice=f"alert:old_secret:{token.id}:{int(use.retires_at)}", at=at,
                subject=f'The old secret of API token "{token.name}" is still in use',
                headline=(f'The API token "{token.name}" was rotated, but its old secret was '
                          f"still used at {_when(at)} from {use.ip}. It stops working at "
                          f"{_when(retires)}."),
                lines=["Put the new token in place before then, or the integration using "
                       "the old one will be refused."],
                details={"ip": use.ip, "used_at": at.isoformat(),
                         "retires_at": retires.isoformat()})

    # --- the audit trail ------------------------------------------------------------------

    def _audit_denials(self, session: Session, batch: Batch) -> None:
        if not batch.denials:
            return
        tokens = sorted({token_id for token_id, _, _ in batch.denials})
        prefixes: dict[str, str] = {}
        for start in range(0, len(tokens), _CHUNK):
            for token_id, region, public_id in session.execute(
                    select(Token.id, Token.region, Token.public_id)
                    .where(Token.id.in_(tokens[start:start + _CHUNK]))):
                prefixes[token_id] = token_format.prefix(region, public_id)
        for (token_id, ip, reason), denial in sorted(
                batch.denials.items(), key=lambda item: (item[1].account_id, item[0])):
            trail.record_denial(session, account_id=denial.account_id, token_id=token_id,
                                ip=ip, reason=reason, count=denial.count,
                                first_at=_moment(denial.first_at),
                                last_at=_moment(denial.last_at),
                                prefix=prefixes.get(token_id))

