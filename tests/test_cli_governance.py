"""`tallykey tokens approve|deny` (SPEC §17), in-process against a real store: a member's
pending token is approved (a node that cached it as pending lets it through) or denied
(revoked, reason `denied`); a token not pending is refused with one line."""

from __future__ import annotations

import json

from tallykey.accounts.service import PolicyChanges
from tallykey.actor import Actor
from tallykey.auth.verifier import Verifier
from tallykey.runtime import Runtime
from tallykey.settings import Settings
from tallykey.tokens.requests import TokenDraft

from .test_cli import Cli, cli

__all__ = ["cli"]  # the fixture, used by name


def test_approve_and_deny_pending_tokens(cli: Cli, database_url: str) -> None:
    assert cli("users", "create", "-a", "acme", "--email", "dev@acme.test", "--role",
               "member").exit_code == 0
    rt = Runtime.build(Settings(database_url=database_url))
    try:
        account = rt.accounts.find_account("acme")
        boss = rt.accounts.find_user(account.id, "boss@acme.test")
        dev = rt.accounts.find_user(account.id, "dev@acme.test")
        rt.accounts.update_policies(Actor(account.id, boss.id, boss.role, boss.email),
                                    PolicyChanges(token_approval="members"))
        as_dev = Actor(account.id, dev.id, dev.role, dev.email)
        wanted = rt.tokens.issue(as_dev, TokenDraft(name="wanted", expires_in_days=7))
        unwanted = rt.tokens.issue(as_dev, TokenDraft(name="unwanted", expires_in_days=7))
    finally:
        rt.close()
    assert wanted.token.pending_at is not None
    verifier = Verifier(database_url, background=False)
    try:
        pending = verifier.verify(f"Bearer {wanted.value}", "127.0.0.1")
        assert pending.status == 401 and pending.body()["error"] == "token_pending"
        approved = cli("tokens", "approve", wanted.secret.prefix, "-a", "acme", "--json")
        assert approved.exit_code == 0, approved.output
        answer = json.loads(approved.stdout)
        assert answer["status"] == "active" and "propagation" in answer
        verifier.sync()
        assert verifier.verify(f"Bearer {wanted.value}", "127.0.0.1").allowed
        again = cli("tokens", "approve", wanted.token.id)
        assert again.exit_code != 0 and "not awaiting approval" in again.stderr

        denied = cli("tokens", "deny", unwanted.token.id)
        assert denied.exit_code == 0, denied.output
        assert denied.stdout.startswith(f"denied {unwanted.secret.prefix} (unwanted): ")
        shown = json.loads(cli("tokens", "show", unwanted.token.id, "--json").stdout)
        assert shown["status"] == "revoked" and shown["revoke_reason"] == "denied"
        verifier.sync()
        refused = verifier.verify(f"Bearer {unwanted.value}", "127.0.0.1")
        assert refused.status == 401 and refused.body()["reason"] == "revoked"
    finally:
        verifier.close()
