"""An identity's page charts its usage from the usage analytics query (SPEC §16): the
requests of all its tokens, per day and per hour, as verified by a real verifier and
written by its flush; the same numbers as `GET /api/v1/analytics/verifications` for the
identity; a member's page counts only their own tokens of it."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
from starlette.testclient import TestClient

from tallykey.auth.verifier import Verifier
from tallykey.clock import FrozenClock
from tallykey.identities.service import IdentityDraft
from tallykey.runtime import Runtime
from tallykey.tokens.requests import TokenChanges, TokenDraft

from ..conftest import World

TOTAL = re.compile(r'<dd id="usage-total">(\d+) allowed, (\d+) denied</dd>')
SUMMARY = re.compile(r"(\d+) allowed and (\d+) denied requests over the last ([^<]+)</desc>")


@pytest.fixture
def verifier(rt: Runtime, clock: FrozenClock) -> Iterator[Verifier]:
    made = Verifier(settings=rt.settings, database=rt.database, clock=clock, background=False)
    yield made
    made.close()


def shown(html: str) -> tuple[int, int, str]:
    total, summary = TOTAL.search(html), SUMMARY.search(html)
    assert total and summary, "no usage total or chart summary on the page"
    assert total.groups() == summary.groups()[:2]
    return int(total.group(1)), int(total.group(2)), summary.group(3)


def test_the_identity_page_charts_its_tokens_usage(
        world: World, rt: Runtime, verifier: Verifier, clock: FrozenClock,
        admin: tuple[TestClient, str], member: tuple[TestClient, str]) -> None:
    identity = rt.identities.create(world.as_admin, IdentityDraft(external_id="cust_c"))
    secrets = {}
    for name in ("crm", "erp", "outside"):
        issued = rt.tokens.issue(world.as_admin, TokenDraft(
            name=name, expires_in_days=30, kind="application", scopes=["employees:read"],
            identity_id=identity.id if name != "outside" else None))
        secrets[name] = issued.value
    own = rt.tokens.issue(world.as_member, TokenDraft(name="own", expires_in_days=30,
                                                      scopes=["employees:read"]))
    rt.tokens.update(world.as_admin, own.token.id, TokenChanges(identity_id=identity.id))
    secrets["own"] = own.value
    earlier: Counter[tuple[str, bool]] = Counter()  # three days ago
    recent: Counter[tuple[str, bool]] = Counter()  # now

    def send(ledger: Counter[tuple[str, bool]], name: str, times: int,
             scope: str = "employees:read") -> None:
        for _ in range(times):
            verdict = verifier.verify(f"Bearer {secrets[name]}", "198.51.100.4", [scope])
            ledger[(name, verdict.allowed)] += 1

    clock.advance(timedelta(days=-3))  # in the daily chart, not the hourly one
    send(earlier, "crm", 4)
    send(earlier, "erp", 2, scope="payroll:write")  # refused: a scope it lacks
    verifier.flush_usage()
    clock.advance(timedelta(days=3))
    send(recent, "crm", 3)
    send(recent, "own", 2)
    send(recent, "outside", 5)  # not the identity's
    verifier.flush_usage()

    def expected(names: set[str], *ledgers: Counter[tuple[str, bool]]) -> tuple[int, int]:
        both = sum(ledgers, Counter())
        return (sum(v for (n, ok), v in both.items() if ok and n in names),
                sum(v for (n, ok), v in both.items() if not ok and n in names))

    ours = {"crm", "erp", "own"}

    client, _ = admin
    page = client.get(f"/console/identities/{identity.id}")
    assert page.status_code == 200
    assert shown(page.text) == (*expected(ours, earlier, recent), "30 days")
    assert expected(ours, earlier, recent) == (9, 2)
    hourly = client.get(f"/console/identities/{identity.id}?usage=hourly")
    assert shown(hourly.text) == (*expected(ours, recent), "48 hours")
    api = client.get("/api/v1/analytics/verifications", params={
        "identity": identity.id, "group_by": "identity"}).json()
    assert [(s["key"], s["allowed"], s["refused"]) for s in api["series"]] == [
        (identity.id, *expected(ours, earlier, recent))]

    member_client, _ = member
    theirs = member_client.get(f"/console/identities/{identity.id}")
    assert theirs.status_code == 200
    assert shown(theirs.text) == (*expected({"own"}, earlier, recent), "30 days")
