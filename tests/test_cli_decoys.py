"""`tallykey tokens create --kind decoy` (SPEC §17): printed once like any token, listed
by kind, and answered as an unknown token."""

from __future__ import annotations

import json

from tallykey.auth.verifier import Verifier

from .test_cli import Cli, cli  # noqa: F401 - the fixture


def test_the_cli_plants_a_decoy(cli: Cli) -> None:  # noqa: F811 - the fixture
    created = cli("tokens", "create", "-a", "acme", "--user", "boss@acme.test", "--name",
                  "planted in the wiki", "--days", "90", "--kind", "decoy", "--json")
    assert created.exit_code == 0, created.output
    token = json.loads(created.stdout)
    assert token["kind"] == "decoy" and token["token"].startswith(token["prefix"])
    listed = cli("tokens", "list", "-a", "acme", "--kind", "decoy", "--json")
    assert [t["id"] for t in json.loads(listed.stdout)["items"]] == [token["id"]]
    verifier = Verifier(background=False)
    try:
        verdict = verifier.verify(f"Bearer {token['token']}", "203.0.113.5")
    finally:
        verifier.close()
    assert not verdict.allowed and verdict.reason == "unknown"
