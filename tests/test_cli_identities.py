"""Identities on the command line (SPEC §16): `tallykey identities list|create|show|update|
delete`, and `tokens create --identity`; refusals are one line and change nothing."""

from __future__ import annotations

import json

from .test_cli import cli  # noqa: F401 - the fixture


def test_create_list_show_update_and_delete(cli) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    made = cli("identities", "create", "-a", "acme", "--external-id", "cust_1", "--name",
               "Customer One", "--credits", "50", "--rate-limit", "default=10/60",
               "--metadata", '{"plan": "pro"}', "--json")
    assert made.exit_code == 0, made.output
    identity = json.loads(made.stdout)
    assert identity["credits"] == {"remaining": 50, "refill": None}
    assert identity["rate_limits"] == [{"name": "default", "limit": 10, "per_seconds": 60,
                                        "shared": None}]
    again = cli("identities", "create", "-a", "acme", "--external-id", "cust_1")
    assert again.exit_code != 0 and "already has an identity" in again.output
    token = cli("tokens", "create", "-a", "acme", "--user", "boss@acme.test", "--days",
                "30", "--name", "of cust_1", "--kind", "application", "--scope",
                "employees:read", "--identity", "cust_1", "--json")
    assert token.exit_code == 0, token.output
    assert json.loads(token.stdout)["identity_id"] == identity["id"]
    listed = json.loads(cli("identities", "list", "-a", "acme", "--json").stdout)
    assert [(i["external_id"], i["tokens"]) for i in listed] == [("cust_1", 1)]
    shown = cli("identities", "show", "-a", "acme", "cust_1")
    assert "credits: 50" in shown.stdout and "of cust_1" in shown.stdout
    updated = cli("identities", "update", "-a", "acme", "cust_1", "--credits", "7",
                  "--no-rate-limits", "--json")
    assert updated.exit_code == 0, updated.output
    body = json.loads(updated.stdout)
    assert body["credits"]["remaining"] == 7 and body["rate_limits"] == []
    assert "complete" in body["propagation"]
    refused = cli("identities", "delete", "-a", "acme", "cust_1")
    assert refused.exit_code != 0 and "--detach" not in refused.stdout
    assert "still has 1 token" in refused.output
    gone = cli("identities", "delete", "-a", "acme", "cust_1", "--detach", "--json")
    assert gone.exit_code == 0, gone.output
    assert json.loads(gone.stdout)["detached_tokens"] == [json.loads(token.stdout)["id"]]
    assert json.loads(cli("identities", "list", "-a", "acme", "--json").stdout) == []


def test_tokens_move_between_identities_list_by_one_and_import_into_one(  # type: ignore[no-untyped-def]
        cli, tmp_path) -> None:  # noqa: F811
    """`tokens update --identity/--no-identity`, `tokens list --identity` and the
    `identity_id` field of `tokens import`'s JSON lines."""
    for external_id in ("cust_a", "cust_b"):
        assert cli("identities", "create", "-a", "acme", "--external-id",
                   external_id).exit_code == 0
    made = json.loads(cli("tokens", "create", "-a", "acme", "--user", "boss@acme.test",
                          "--days", "30", "--name", "mover", "--kind", "application",
                          "--scope", "employees:read", "--identity", "cust_a",
                          "--json").stdout)
    keys = tmp_path / "keys.jsonl"
    keys.write_text(json.dumps({"key": "legacy_live_4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c",
                                "name": "legacy", "expires_in_days": 30,
                                "identity_id": "cust_b"}) + "\n")
    imported = cli("tokens", "import", str(keys), "-a", "acme", "--json")
    assert imported.exit_code == 0, imported.output
    [legacy] = json.loads(imported.stdout)["keys"]

    def listed(identity: str) -> set[str]:
        out = cli("tokens", "list", "-a", "acme", "--identity", identity, "--json")
        assert out.exit_code == 0, out.output
        return {token["id"] for token in json.loads(out.stdout)["items"]}

    assert listed("cust_a") == {made["id"]} and listed("cust_b") == {legacy["id"]}
    moved = cli("tokens", "update", made["id"], "-a", "acme", "--identity", "cust_b",
                "--json")
    assert moved.exit_code == 0, moved.output
    assert listed("cust_a") == set() and listed("cust_b") == {made["id"], legacy["id"]}
    out = cli("tokens", "update", made["id"], "-a", "acme", "--no-identity", "--json")
    assert out.exit_code == 0 and json.loads(out.stdout)["identity_id"] is None
    assert listed("cust_b") == {legacy["id"]}
    unknown = cli("tokens", "update", made["id"], "-a", "acme", "--identity", "nobody")
    assert unknown.exit_code != 0 and "No identity 'nobody'" in unknown.output
