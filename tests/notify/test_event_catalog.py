"""The webhook event catalog (SPEC §17: every event type documented and tested).

docs/integrations.md ("Webhook events") has one table row per event type. Here: the table
lists exactly the types the code can send (`EVENT_TYPES`, and every `TOKEN_*` event
constant), and each type is made to happen for real — through the token service, the
worker's scheduler or the verifier's usage flush — and delivered by the real worker to a
real HTTP receiver on 127.0.0.1, whose request is checked: the signature, the headers, the
envelope and the `details` fields of the event's row.

To add an event type: its constant (in `tokens/events.py` or `notify/webhooks.py`), its
entry in `EVENT_TYPES`, its row in the docs table and its trigger in `TRIGGERS` below.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tallykey.accounts.service import PolicyChanges
from tallykey.auth.verifier import Verifier
from tallykey.clock import FrozenClock
from tallykey.notify import webhooks
from tallykey.notify.models import OutboxMessage
from tallykey.notify.webhooks import EVENT_TYPES, verify_signature
from tallykey.runtime import Runtime
from tallykey.settings import Settings
from tallykey.tokens import events
from tallykey.tokens.requests import IssuedToken, Renewal, TokenChanges, TokenDraft

from ..conftest import World
from .conftest import HttpReceiver, make_worker

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"
ROW = re.compile(r"^\| `(token\.[a-z_]+)` \| [^|]+ \| ([^|]+) \|$", re.M)
ANY_CHANGED_FIELD = "*"


def documented() -> dict[str, tuple[set[str], set[str]]]:
    """Each row of the "Webhook events" table: event -> (required fields, optional ones);
    `{"*"}` required means "each changed field"."""
    text = DOC.read_text()
    start = text.index("### Webhook events")
    end = text.find("\n## ", start)
    rows: dict[str, tuple[set[str], set[str]]] = {}
    for event, fields in ROW.findall(text[start:end if end >= 0 else None]):
        assert event not in rows, f"{event} has two rows"
        if "each changed field" in fields:
            rows[event] = ({ANY_CHANGED_FIELD}, set())
            continue
        names = re.findall(r"`([a-z_]+)(\??)`", fields)
        rows[event] = ({n for n, q in names if not q}, {n for n, q in names if q})
    return rows


def event_constants() -> set[str]:
    """Every event constant the code defines (`TOKEN_…` = "token.…")."""
    found = set()
    for module in (events, webhooks):
        for name, value in vars(module).items():
            if name.startswith("TOKEN_") and isinstance(value, str) and value.startswith(
                    "token."):
                found.add(value)
    return found


KEK = "catalog:" + base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Receivers on localhost; a key-encryption key so secrets can be retrieved."""
    return Settings(database_url=database_url, data_dir=tmp_path / "data", region="eu1",
                    webhook_private_targets=True, kek=KEK)


@dataclass
class Scene:
    rt: Runtime
    world: World
    clock: FrozenClock
    verifier: Verifier

    def issue(self, name: str = "CRM", **extra: Any) -> IssuedToken:
        return self.rt.tokens.issue(self.world.as_admin, TokenDraft(
            name=name, expires_in_days=30, scopes=["employees:read"], **extra))


def _created(s: Scene) -> None:
    s.issue()


def _updated(s: Scene) -> None:
    token = s.issue().token
    s.rt.tokens.update(s.world.as_admin, token.id, TokenChanges(name="CRM sync"))


def _rotated(s: Scene) -> None:
    s.rt.tokens.rotate(s.world.as_admin, s.issue().token.id)


def _revoked(s: Scene) -> None:
    s.rt.tokens.revoke(s.world.as_admin, s.issue().token.id,
                       "left the company")


def _suspended(s: Scene) -> None:
    s.rt.tokens.suspend(s.world.as_admin, s.issue().token.id)


def _resumed(s: Scene) -> None:
    token = s.issue().token
    s.rt.tokens.suspend(s.world.as_admin, token.id)
    s.clock.advance(timedelta(minutes=5))
    s.rt.tokens.resume(s.world.as_admin, token.id)


def _renewed(s: Scene) -> None:
    token = s.issue().token
    s.rt.tokens.renew(s.world.as_admin, token.id, Renewal(expires_in_days=60))


def _secret_retrieved(s: Scene) -> None:
    s.rt.accounts.update_policies(s.world.as_admin, PolicyChanges(
        retrievable_application_tokens=True))
    token = s.issue(name="Export", kind="application", target="Excel").token
    assert s.rt.tokens.retrieve_secret(s.world.as_admin, token.id).value


def _pending(s: Scene) -> IssuedToken:
    s.rt.accounts.update_policies(s.world.as_admin, PolicyChanges(token_approval="members"))
    return s.rt.tokens.issue(s.world.as_member, TokenDraft(
        name="Pending", expires_in_days=30, scopes=["employees:read"]))


def _approved(s: Scene) -> None:
    s.rt.tokens.approve(s.world.as_admin, _pending(s).token.id)


def _denied(s: Scene) -> None:
    s.rt.tokens.deny(s.world.as_admin, _pending(s).token.id)


def _expiring(s: Scene) -> None:
    token = s.issue().token
    s.clock.set(token.expires_at - timedelta(days=6))  # the worker's pass schedules it


def _expired(s: Scene) -> None:
    token = s.issue().token
    s.clock.set(token.expires_at + timedelta(hours=2))


def _new_network(s: Scene) -> None:
    header = f"Bearer {s.issue().value}"
    assert s.verifier.verify(header, "198.51.100.7").allowed  # the baseline network
    s.verifier.flush_usage()
    assert s.verifier.verify(header, "203.0.113.50").allowed
    s.verifier.flush_usage()


def _denied_spike(s: Scene) -> None:
    header = f"Bearer {s.issue(ip_allowlist=['198.51.100.0/24']).value}"
    for _ in range(25):  # the threshold is 20 here
        assert s.verifier.verify(header, "203.0.113.9").status == 403
    s.verifier.flush_usage()


def _old_secret_used(s: Scene) -> None:
    issued = s.issue()
    s.rt.tokens.rotate(s.world.as_admin, issued.token.id, 3600)
    assert s.verifier.verify(f"Bearer {issued.value}", "198.51.100.7").allowed
    s.verifier.flush_usage()


def _many_networks(s: Scene) -> None:
    header = f"Bearer {s.issue().value}"
    for n in range(6):  # six networks within a minute (the threshold is 5)
        assert s.verifier.verify(header, f"203.0.{n}.1").allowed
    s.verifier.flush_usage()


def _decoy_used(s: Scene) -> None:
    decoy = s.rt.tokens.issue(s.world.as_admin, TokenDraft(
        name="Old deploy key", kind="decoy", expires_in_days=365))
    answer = s.verifier.verify(f"Bearer {decoy.value}", "203.0.113.77",
                               user_agent="curl/8.5.0", path="/api/v1/employees")
    assert not answer.allowed
    s.verifier.flush_usage()


#: How to make each event type happen for real.
TRIGGERS: dict[str, Callable[[Scene], None]] = {
    events.TOKEN_CREATED: _created,
    events.TOKEN_UPDATED: _updated,
    events.TOKEN_ROTATED: _rotated,
    events.TOKEN_REVOKED: _revoked,
    events.TOKEN_SUSPENDED: _suspended,
    events.TOKEN_RESUMED: _resumed,
    events.TOKEN_RENEWED: _renewed,
    events.TOKEN_SECRET_RETRIEVED: _secret_retrieved,
    events.TOKEN_APPROVED: _approved,
    events.TOKEN_DENIED: _denied,
    webhooks.TOKEN_EXPIRING: _expiring,
    webhooks.TOKEN_EXPIRED: _expired,
    webhooks.TOKEN_NEW_NETWORK: _new_network,
    webhooks.TOKEN_DENIED_SPIKE: _denied_spike,
    webhooks.TOKEN_OLD_SECRET_USED: _old_secret_used,
    webhooks.TOKEN_MANY_NETWORKS: _many_networks,
    webhooks.TOKEN_DECOY_USED: _decoy_used,
}


def test_the_documented_table_is_the_catalog_of_what_the_code_sends() -> None:
    table = documented()
    assert set(table) == set(EVENT_TYPES), (sorted(set(EVENT_TYPES) - set(table)),
                                            sorted(set(table) - set(EVENT_TYPES)))
    assert event_constants() <= set(EVENT_TYPES), sorted(event_constants() - set(EVENT_TYPES))
    assert set(TRIGGERS) == set(EVENT_TYPES), "every event type needs its delivery test"


def test_an_event_type_outside_the_catalog_is_never_delivered(world: World) -> None:
    issued = world.rt.tokens.issue(world.as_admin, TokenDraft(name="x", expires_in_days=3))
    with world.rt.database.reading() as session, pytest.raises(ValueError, match="EVENT_TYPES"):
        webhooks.drafts_for(session, issued.token, notice="n", event="token.undocumented",
                            occurred_at=world.rt.clock.now(), actor=None, details={})


@pytest.fixture
def verifier(rt: Runtime, clock: FrozenClock) -> Iterator[Verifier]:
    settings = rt.settings.model_copy(update={"alert_denied_threshold": 20})
    made = Verifier(settings=settings, database=rt.database, clock=clock, background=False)
    yield made
    made.close()


@pytest.mark.parametrize("event", list(EVENT_TYPES))
def test_each_event_reaches_a_real_receiver_signed_and_as_documented(
        event: str, rt: Runtime, world: World, clock: FrozenClock, verifier: Verifier,
        http_receiver: HttpReceiver) -> None:
    endpoint, secret = rt.webhooks.add(world.as_admin, http_receiver.url, events=[event])
    TRIGGERS[event](Scene(rt, world, clock, verifier))
    worker = make_worker(rt, None)
    try:
        worker.run_once()
    finally:
        worker.close()
    received = http_receiver.requests
    assert received, f"no {event} delivery reached the receiver"
    with rt.database.reading() as session:
        rows = {m.id: m for m in session.scalars(select(OutboxMessage).where(
            OutboxMessage.endpoint_id == endpoint.id))}
    required, optional = documented()[event]
    for request in received:
        headers = request.headers
        assert headers["Tallykey-Event"] == event  # the filter let nothing else through
        verify_signature(secret, headers["Tallykey-Signature"], request.body, clock.now(),
                         delivery=headers["Tallykey-Delivery"])
        assert rows[headers["Tallykey-Delivery"]].status == "sent"
        body = json.loads(request.body)
        assert set(body) == {"id", "type", "occurred_at", "account_id", "data"}
        assert (body["type"], body["account_id"]) == (event, world.acme_id)
        assert set(body["data"]) == {"token", "actor", "details"}
        assert {"id", "name", "prefix", "scopes", "expires_at"} <= set(body["data"]["token"])
        details = body["data"]["details"]
        if required == {ANY_CHANGED_FIELD}:
            assert details and all(isinstance(v, list) and len(v) == 2
                                   for v in details.values()), details
        else:
            assert required <= set(details) <= required | optional, (
                f"{event}: sent {sorted(details)}, documented {sorted(required)} "
                f"+ optional {sorted(optional)}")
