"""The verification decision on its own (`auth.decide`): plain records and request facts,
no database, no feed, no network. Each refusal reason of SPEC §3, its order, and the
allowed path (with and without a workspace)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tallykey.auth.cache import allowed_verdict
from tallykey.auth.decide import (
    DECOY,
    decide,
    ip_allowed,
    refusal,
    unknown_token,
    wrong_region,
)
from tallykey.auth.record import TokenRecord, networks
from tallykey.auth.verdict import Verdict
from tallykey.controls.rules import RateRule
from tallykey.errors import (
    AccountSuspended,
    AuthenticationError,
    ExpiredToken,
    InsufficientScope,
    IpNotAllowed,
    OwnerInactive,
    RevokedToken,
    RotatedOut,
    TokenPending,
    TokenSuspended,
    UnknownToken,
    WorkspaceArchived,
    WorkspaceNotAllowed,
    WrongRegion,
)
from tallykey.tokens.models import DECOY as DECOY_KIND

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
T = NOW.timestamp()
IP = "198.51.100.7"
SALES, OPS = "ws-sales", "ws-ops"


def record(**changes: Any) -> TokenRecord:
    """A plain token of acme, seeing two workspaces: `orders:read` in both (so it passes
    without a workspace), `orders:write` in sales only."""
    fields: dict[str, Any] = dict(
        token_id="tok-1", account_id="acc-1", account_slug="acme", kind="personal",
        workspace_id=None, expires_at=NOW + timedelta(days=1), revoked_at=None,
        secret_retires_at=None, token_networks=(), account_networks=(),
        scopes=frozenset({"orders:read"}),
        token_scopes=frozenset({"orders:read", "orders:write", "admin:all"}),
        workspaces={SALES: frozenset({"orders:read", "orders:write"}),
                    OPS: frozenset({"orders:read"})},
        owner_id="u-1", owner_email="ada@acme.test", owner_active=True,
        workspace_slugs={"sales": SALES, "ops": OPS})
    fields.update(changes)
    return TokenRecord(**fields)


def answer(made: TokenRecord, scopes: tuple[str, ...] = (), workspace: str | None = None,
           ip: str = IP, now: float = T) -> Verdict | AuthenticationError:
    return decide(made, allowed_verdict(made), now, ip, scopes, workspace)


def refused(made: TokenRecord, scopes: tuple[str, ...] = (), workspace: str | None = None,
            ip: str = IP, now: float = T) -> AuthenticationError:
    outcome = answer(made, scopes, workspace, ip, now)
    assert isinstance(outcome, AuthenticationError), outcome
    # the refusal alone says the same
    again = refusal(made, now, ip, scopes, workspace)
    assert again is not None and type(again) is type(outcome)
    assert again.as_dict() == outcome.as_dict()
    return outcome


# --- the allowed path ------------------------------------------------------------------

def test_a_plain_token_passes_with_its_ready_made_verdict() -> None:
    made = record()
    allowed = allowed_verdict(made)
    outcome = decide(made, allowed, T, IP, ("orders:read",))
    assert outcome is allowed  # the cached verdict itself: nothing is made per request
    assert outcome.allowed and outcome.token_id == "tok-1" and outcome.workspace is None
    assert decide(made, allowed, T, IP) is allowed  # no scope asked
    assert refusal(made, T, IP, ("orders:read",)) is None


@pytest.mark.parametrize("ref", [SALES, "sales"])
def test_a_named_workspace_by_id_or_slug_answers_for_that_workspace(ref: str) -> None:
    made = record()
    allowed = allowed_verdict(made)
    outcome = decide(made, allowed, T, IP, ("orders:write",), ref)
    assert isinstance(outcome, Verdict) and outcome.allowed
    assert outcome.workspace == SALES and outcome.scopes == {"orders:read", "orders:write"}
    assert outcome is allowed.for_workspace(SALES)  # made once, then kept


def test_a_token_that_is_not_plain_passes_when_nothing_refuses_it() -> None:
    """Allow-listed address, a rotated secret within its grace, a rate limit: the full
    check runs, and the verdict is still the ready-made one."""
    made = record(token_networks=networks(["198.51.100.0/24"]),
                  account_networks=networks(["198.51.0.0/16"]),
                  secret_retires_at=NOW + timedelta(hours=1),
                  rate_rules=(RateRule(name="minute", limit=10, per_seconds=60),))
    assert not made.plain and made.controlled
    allowed = allowed_verdict(made)
    assert decide(made, allowed, T, IP, ("orders:read",)) is allowed
    outcome = decide(made, allowed, T, IP, ("orders:write",), "sales")
    assert isinstance(outcome, Verdict) and outcome.workspace == SALES


# --- every refusal ---------------------------------------------------------------------

def test_expired_at_the_very_second_of_expiry() -> None:
    made = record(expires_at=NOW)
    error = refused(made)
    assert isinstance(error, ExpiredToken) and error.reason == "expired"
    assert error.details["expired_at"] == NOW.isoformat()
    assert isinstance(answer(made, now=T - 0.001), Verdict)


def test_revoked() -> None:
    error = refused(record(revoked_at=NOW - timedelta(minutes=5)))
    assert isinstance(error, RevokedToken) and error.reason == "revoked"
    assert error.details["revoked_at"] == (NOW - timedelta(minutes=5)).isoformat()


def test_suspended_names_who_and_when() -> None:
    error = refused(record(suspended_at=NOW, suspended_by="ops@acme.test"))
    assert isinstance(error, TokenSuspended) and error.reason == "suspended"
    assert error.details["suspended_by"] == "ops@acme.test"


def test_pending_approval() -> None:
    error = refused(record(pending_at=NOW - timedelta(hours=2)))
    assert isinstance(error, TokenPending) and error.reason == "token_pending"


def test_account_suspended() -> None:
    error = refused(record(account_active=False))
    assert isinstance(error, AccountSuspended) and error.reason == "account_suspended"


def test_workspace_archived() -> None:
    error = refused(record(workspace_id=SALES, workspace_archived=True))
    assert isinstance(error, WorkspaceArchived) and error.reason == "workspace_archived"


def test_owner_inactive() -> None:
    error = refused(record(owner_active=False))
    assert isinstance(error, OwnerInactive) and error.reason == "owner_inactive"


@pytest.mark.parametrize("renewed", [False, True])
def test_rotated_out_once_the_grace_ends(renewed: bool) -> None:
    made = record(secret_retires_at=NOW, renewed=renewed)
    error = refused(made)
    assert isinstance(error, RotatedOut) and error.reason == "rotated_out"
    assert ("renewed" in error.message) is renewed
    assert isinstance(answer(made, now=T - 1), Verdict)  # within the grace


@pytest.mark.parametrize("where", ["token_networks", "account_networks"])
def test_an_address_outside_either_allow_list(where: str) -> None:
    made = record(**{where: networks(["203.0.113.0/24"])})
    error = refused(made)
    assert isinstance(error, IpNotAllowed) and error.reason == "ip_not_allowed"
    assert error.status == 403 and error.details["ip"] == IP
    assert isinstance(answer(made, ip="203.0.113.9"), Verdict)
    # both lists apply: an address must be in each
    both = record(token_networks=networks(["203.0.113.0/24"]),
                  account_networks=networks(["198.51.100.0/24"]))
    assert isinstance(refused(both, ip="203.0.113.9"), IpNotAllowed)
    assert ip_allowed(both, "203.0.113.9") is False


@pytest.mark.parametrize("ip", ["", "not-an-address", "198.51.100.7:443"])
def test_an_address_that_does_not_parse_is_in_no_allow_list(ip: str) -> None:
    made = record(token_networks=networks(["0.0.0.0/0", "::/0"]))
    assert ip_allowed(made, ip) is False
    error = refused(made, ip=ip)
    assert isinstance(error, IpNotAllowed)
    assert error.message.startswith(f"Requests from {ip or 'an unknown address'} ")


def test_a_scope_the_token_does_not_grant() -> None:
    error = refused(record(), ("billing:read",))
    assert isinstance(error, InsufficientScope) and error.reason == "insufficient_scope"
    assert error.status == 403 and error.details["scope"] == "billing:read"
    assert "does not grant" in error.message


def test_a_scope_held_only_in_some_workspaces_names_them() -> None:
    error = refused(record(), ("orders:write",))
    assert isinstance(error, InsufficientScope)
    assert error.details["workspaces"] == ["sales"]
    assert "Tallykey-Workspace" in error.hint


def test_a_scope_of_the_token_its_owner_no_longer_holds() -> None:
    error = refused(record(), ("admin:all",))
    assert isinstance(error, InsufficientScope)
    assert "owner does not hold the permission 'admin:all'" in error.message


def test_a_workspace_the_token_does_not_see() -> None:
    error = refused(record(), ("orders:read",), "finance")
    assert isinstance(error, WorkspaceNotAllowed) and error.reason == "workspace_not_allowed"
    assert error.details["workspace"] == "finance"
    long = "w" * 100
    assert refused(record(), (), long).details["workspace"] == long[:64]


def test_a_scope_missing_in_the_named_workspace() -> None:
    owner_lacks = refused(record(), ("orders:write",), "ops")
    assert isinstance(owner_lacks, InsufficientScope)
    assert "in workspace 'ops'" in owner_lacks.message
    assert owner_lacks.details["workspace"] == "ops"
    not_granted = refused(record(), ("billing:read",), OPS)
    assert isinstance(not_granted, InsufficientScope)
    assert "does not grant" in not_granted.message and not_granted.details["workspace"] == OPS


def test_a_decoy_never_passes_and_is_told_apart_only_by_identity() -> None:
    made = record(kind=DECOY_KIND)
    assert made.decoy and not made.plain
    outcome = answer(made, ("orders:read",))
    assert outcome is DECOY and isinstance(outcome, UnknownToken)
    assert refusal(made, T, IP) is DECOY
    # a decoy is refused first, whatever else is true of it
    assert refusal(replace(made, revoked_at=NOW), T - 10**9, "bad ip") is DECOY


# --- order (SPEC §3) -------------------------------------------------------------------

def test_the_first_reason_in_order_is_the_one_given() -> None:
    everything = dict(revoked_at=NOW, pending_at=NOW, suspended_at=NOW, suspended_by="ops",
                      account_active=False, workspace_archived=True,
                      expires_at=NOW - timedelta(days=1),
                      secret_retires_at=NOW - timedelta(days=1), owner_active=False,
                      token_networks=networks(["203.0.113.0/24"]))
    order = [("revoked_at", RevokedToken), ("pending_at", TokenPending),
             ("suspended_at", TokenSuspended), ("account_active", AccountSuspended),
             ("workspace_archived", WorkspaceArchived), ("expires_at", ExpiredToken),
             ("secret_retires_at", RotatedOut), ("owner_active", OwnerInactive),
             ("token_networks", IpNotAllowed)]
    fields: dict[str, Any] = dict(everything)
    for field, expected in order:
        assert type(refused(record(**fields), ("billing:read",), "finance")) is expected
        fields[field] = getattr(record(), field)  # that reason no longer holds
        if field == "suspended_at":
            fields["suspended_by"] = None
    assert type(refused(record(**fields), ("billing:read",), "finance")) is (
        WorkspaceNotAllowed)
    assert type(refused(record(**fields), ("billing:read",))) is InsufficientScope


# --- the refusals made before a record is found ----------------------------------------

def test_an_unknown_token_names_this_region() -> None:
    error = unknown_token("eu1")
    assert isinstance(error, UnknownToken) and error.reason == "unknown"
    assert "(eu1)" in error.hint and error is not DECOY


def test_a_token_of_another_region_names_its_url_when_known() -> None:
    known = wrong_region("us1", "eu1", "https://us1.tallykey.test")
    assert isinstance(known, WrongRegion) and known.reason == "wrong_region"
    assert known.message == "This token belongs to region 'us1', not to this region ('eu1')."
    assert known.hint == ("Send requests for this token to region us1: its API base URL is "
                          "https://us1.tallykey.test.")
    assert known.details == {"region": "us1", "base_url": "https://us1.tallykey.test"}
    unknown = wrong_region("us1", "eu1", None)
    assert unknown.hint == "Send requests for this token to region us1: use the us1 API base URL."
    assert unknown.details == {"region": "us1"}


def test_the_decision_imports_no_database_feed_or_network_code() -> None:
    script = ("import sys, tallykey.auth.decide\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in "
              "{'sqlalchemy', 'psycopg', 'redis', 'httpx', 'anyio'} or m.startswith("
              "('tallykey.db', 'tallykey.feed', 'tallykey.network', 'tallykey.auth.lookup',"
              " 'tallykey.auth.redis_link', 'tallykey.monitor', 'tallykey.notify'))))\n")
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True)
    assert ran.stdout.strip() == "[]", ran.stdout
