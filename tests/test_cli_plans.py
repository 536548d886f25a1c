"""Plans on the command line (SPEC §16): `tallykey plans list|create|show|update|delete`,
and `--plan` on `tokens create|update` and `identities create|update`; refusals are one
line and change nothing."""

from __future__ import annotations

import json

from .test_cli import cli  # noqa: F401 - the fixture


def test_create_list_show_update_and_delete(cli) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    made = cli("plans", "create", "-a", "acme", "--name", "pro", "--rate-limit",
               "default=100/60", "--refill", "1000/monthly", "--scope", "employees:read",
               "--json")
    assert made.exit_code == 0, made.output
    plan = json.loads(made.stdout)
    assert plan["rate_limits"] == [{"name": "default", "limit": 100, "per_seconds": 60,
                                    "shared": None}]
    assert plan["refill"] == {"amount": 1000, "interval": "monthly"}
    assert plan["scopes"] == ["employees:read"]
    again = cli("plans", "create", "-a", "acme", "--name", "pro")
    assert again.exit_code != 0 and "already has a plan named 'pro'" in again.output
    bad = cli("plans", "create", "-a", "acme", "--name", "x", "--rate-limit", "lots")
    assert bad.exit_code != 0 and "NAME=LIMIT/SECONDS" in bad.output
    wide = cli("tokens", "create", "-a", "acme", "--user", "boss@acme.test", "--days", "30",
               "--name", "too wide", "--kind", "application", "--scope", "employees:write",
               "--plan", "pro")
    assert wide.exit_code != 0 and "outside the plan" in wide.output
    token = cli("tokens", "create", "-a", "acme", "--user", "boss@acme.test", "--days",
                "30", "--name", "on pro", "--kind", "application", "--scope",
                "employees:read", "--plan", "pro", "--json")
    assert token.exit_code == 0, token.output
    assert json.loads(token.stdout)["plan_id"] == plan["id"]
    identity = cli("identities", "create", "-a", "acme", "--external-id", "cust_1",
                   "--plan", "pro", "--json")
    assert identity.exit_code == 0, identity.output
    assert json.loads(identity.stdout)["plan_id"] == plan["id"]
    listed = json.loads(cli("plans", "list", "-a", "acme", "--json").stdout)
    assert [(p["name"], p["tokens"], p["identities"]) for p in listed] == [("pro", 1, 1)]
    shown = cli("plans", "show", "-a", "acme", "pro")
    assert "default=100/60" in shown.stdout and "1000/monthly" in shown.stdout
    updated = cli("plans", "update", "-a", "acme", "pro", "--rate-limit", "default=5/60",
                  "--no-refill", "--no-ceiling", "--json")
    assert updated.exit_code == 0, updated.output
    body = json.loads(updated.stdout)
    assert body["rate_limits"][0]["limit"] == 5 and body["refill"] is None
    assert body["scopes"] is None and body["propagation"]["complete"] is True
    refused = cli("plans", "delete", "-a", "acme", "pro")
    assert refused.exit_code != 0 and "still used by 1 token(s)" in refused.output
    off = cli("identities", "update", "-a", "acme", "cust_1", "--no-plan", "--json")
    assert json.loads(off.stdout)["plan_id"] is None
    gone = cli("plans", "delete", "-a", "acme", "pro", "--detach", "--json")
    assert gone.exit_code == 0, gone.output
    assert json.loads(gone.stdout)["detached_tokens"] == [json.loads(token.stdout)["id"]]
    assert json.loads(cli("plans", "list", "-a", "acme", "--json").stdout) == []
