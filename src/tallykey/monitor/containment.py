"""Containment (SPEC §17): with the account policy `contain: suspend`, a token an
anomaly alert names (a new network, many networks at once, a burst of refusals) is
suspended at once.

The suspension goes through `TokenService.suspend`, the path of a manual suspension: it
is audited (actor `system`, reason `contained`, the alert's kind), announced on the
change feed and waited for like any other (`Propagator.settle`), so every node that
holds a lease stops accepting the token, or is named with the moment it stops by
itself. Then the account's admins are mailed a link to the token's console page, where
they resume it, saying how far the suspension reached.

The alert is raised in the usage flush (`monitor.alerts`); the suspension runs after that
transaction committed, on a thread of its own, because waiting for the nodes'
acknowledgements includes this node's, which the flushing thread would otherwise hold up.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tallykey.accounts.models import CONTAIN_SUSPEND, Account
from tallykey.actor import Actor
from tallykey.audit import trail
from tallykey.clock import Clock
from tallykey.db.engine import Database
from tallykey.errors import Conflict, NotFound, StoreUnavailable
from tallykey.feed.clock import DatabaseClock
from tallykey.feed.nodes import Propagation
from tallykey.feed.propagation import Propagator
from tallykey.monitor.metrics import PROPAGATION_INCOMPLETE
from tallykey.notify.notices import Notifier
from tallykey.settings import Settings
from tallykey.tokens.models import CONTAINED, Token

if TYPE_CHECKING:
    from tallykey.tokens.service import TokenService

log = logging.getLogger(__name__)

TOKEN_CONTAINED = "token.contained"  # noqa: S105 - an audit action name
LABEL = "tallykey (containment)"
#: What each alert is called in audit entries and mails.
ALERTS = {"new_network": "used from a new network",
          "many_networks": "used from many networks at once",
          "denied_spike": "a burst of refused requests"}


@dataclass(frozen=True)
class Incident:
    """An anomaly alert that named a token."""

    token_id: str
    account_id: str
    alert: str
    summary: str


class Containment:
    """Suspends the tokens of incidents in accounts whose policy says so."""

    def __init__(self, database: Database, settings: Settings, notifier: Notifier,
                 clock: Clock, database_clock: DatabaseClock) -> None:
        self.database = database
        self.settings = settings
        self.notifier = notifier
        self.clock = clock
        self.database_clock = database_clock
        self.tokens = _token_service(database, clock, settings, notifier)
        self.propagation = (None if self.tokens is None else Propagator(
            database, database_clock, settings.propagation_timeout, settings.stale_if_error,
            PROPAGATION_INCOMPLETE.inc))
        self.threads: list[threading.Thread] = []

    @staticmethod
    def applies(account: Account) -> bool:
        return account.contain == CONTAIN_SUSPEND

    def start(self, incidents: list[Incident]) -> None:
        """Contain each token (one incident per token) on a thread of its own."""
        if self.tokens is None:
            for incident in incidents:
                log.warning("token %s not contained by this process: an embedded verifier "
                            "without tallykey[server] cannot suspend (the server's nodes "
                            "contain the alerts they raise)", incident.token_id)
            return
        seen: set[str] = set()
        self.threads = [thread for thread in self.threads if thread.is_alive()]
        for incident in incidents:
            if incident.token_id in seen:
                continue
            seen.add(incident.token_id)
            thread = threading.Thread(target=self._contain_quietly, args=(incident,),
                                      name="tallykey-containment", daemon=True)
            self.threads.append(thread)
            thread.start()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the containments started so far (tests, shutdown)."""
        for thread in list(self.threads):
            thread.join(timeout)

    def _contain_quietly(self, incident: Incident) -> None:
        try:
            self.contain(incident)
        except StoreUnavailable:
            log.warning("could not contain token %s: the store is unreachable",
                        incident.token_id)
        except Exception:
            log.exception("could not contain token %s", incident.token_id)

    def contain(self, incident: Incident) -> Propagation | None:
        """Suspend the token, wait for the nodes, tell the admins. None when there was
        nothing to do (suspended, revoked or expired already)."""
        actor = Actor.system(incident.account_id, LABEL)
        if self.tokens is None or self.propagation is None:
            return None
        try:
            self.tokens.suspend(actor, incident.token_id, reason=CONTAINED,
                                details={"alert": incident.alert})
        except (Conflict, NotFound):
            return None
        propagation = self.propagation.settle(incident.token_id)
        now = self.clock.now()
        reach = propagation.summary("stopped")
        with self.database.transaction() as session:
            token = session.get_one(Token, incident.token_id)
            trail.record(session, actor=actor, action=TOKEN_CONTAINED, at=now,
                         target_type="token", target_id=token.id,
                         details={"prefix": token.prefix, "reason": CONTAINED,
                                  "alert": incident.alert,
                                  "complete": propagation.complete,
                                  "confirmed": propagation.confirmed,
                                  "unconfirmed": [node.label for node
                                                  in propagation.unconfirmed]})
            what = ALERTS.get(incident.alert, incident.alert)
            self.notifier.alert(
                session, token, event=TOKEN_CONTAINED,
                notice=f"contained:{token.id}:{int(now.timestamp())}", at=now,
                subject=f'API token "{token.name}" was suspended by containment',
                headline=(f'The API token "{token.name}" was suspended at once because an '
                          f"anomaly alert fired for it: {what}."),
                lines=[incident.summary, f"The suspension: {reach}.",
                       "Your account's containment policy (contain: suspend) did this."],
                details={"alert": incident.alert, "complete": propagation.complete},
                to_admins=True, webhook=False, template="token_contained")
        log.warning("token %s contained (%s): %s", incident.token_id, incident.alert, reach)
        return propagation


def _token_service(database: Database, clock: Clock, settings: Settings,
                   notifier: Notifier) -> TokenService | None:
    """The token service suspensions go through; None in an embedded install
    (`tallykey[embedded]` has no password hashing or e-mail validation, which the service's
    modules load)."""
    try:
        from tallykey.tokens.service import TokenService
    except ImportError:
        return None
    return TokenService(database, clock, region=settings.region,
                        listeners=[notifier.on_token_event])
