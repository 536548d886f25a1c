"""Key controls on the command line (SPEC §13): set on create and update, shown by
`tokens show`, searched with `tokens list --external-id`; bad values are one line on
stderr and change nothing."""

from __future__ import annotations

import json

from .test_cli import cli  # noqa: F401 - the fixture

CREATE = ("tokens", "create", "-a", "acme", "--user", "boss@acme.test", "--days", "30")


def test_create_show_update_and_search(cli) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    made = cli(*CREATE, "--name", "metered", "--rate-limit", "default=100/60",
               "--rate-limit", "customer=1000/3600:external_id", "--credits", "500",
               "--refill", "500/monthly", "--metadata", '{"plan": "pro"}', "--external-id",
               "cust_42", "--json")
    assert made.exit_code == 0, made.output
    token = json.loads(made.stdout)
    assert token["rate_limits"] == [
        {"name": "default", "limit": 100, "per_seconds": 60, "shared": None},
        {"name": "customer", "limit": 1000, "per_seconds": 3600, "shared": "external_id"}]
    assert token["credits"]["remaining"] == 500
    assert token["credits"]["refill"] == {"amount": 500, "interval": "monthly"}
    assert token["metadata"] == {"plan": "pro"} and token["external_id"] == "cust_42"
    assert cli(*CREATE, "--name", "other", "--external-id", "cust_7").exit_code == 0
    found = cli("tokens", "list", "-a", "acme", "--external-id", "cust_42", "--json")
    assert [t["id"] for t in json.loads(found.stdout)["items"]] == [token["id"]]
    shown = cli("tokens", "show", token["prefix"])
    assert "credits" in shown.stdout and "next_refill_at" in shown.stdout
    updated = cli("tokens", "update", token["id"], "--rate-limit", "burst=5/1",
                  "--credits", "7", "--metadata", "{}", "--external-id", "", "--json")
    assert updated.exit_code == 0, updated.output
    body = json.loads(updated.stdout)
    assert body["rate_limits"] == [{"name": "burst", "limit": 5, "per_seconds": 1,
                                    "shared": None}]
    assert body["credits"] == {"remaining": 7, "refill": None, "next_refill_at": None}
    assert body["metadata"] is None and body["external_id"] is None
    cleared = cli("tokens", "update", token["id"], "--no-rate-limits", "--no-credits",
                  "--json")
    assert json.loads(cleared.stdout)["rate_limits"] == []
    assert json.loads(cleared.stdout)["credits"] is None


def test_bad_values_are_one_line_and_change_nothing(cli) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    made = json.loads(cli(*CREATE, "--name", "kept", "--rate-limit", "default=10/1",
                          "--json").stdout)
    for args, message in [
        (("--rate-limit", "default=0/60"), "limit must be a whole number from 1"),
        (("--rate-limit", "lots"), "NAME=LIMIT/SECONDS"),
        (("--rate-limit", "x=5/0"), "per_seconds must be a whole number from 1"),
        (("--credits", "-1"), "credits.remaining"),
        (("--refill", "5/weekly", "--credits", "5"), "AMOUNT/daily or AMOUNT/monthly"),
        (("--refill", "5/daily"), "--refill needs --credits"),
        (("--metadata", "[1]"), "metadata must be a JSON object"),
        (("--metadata", "{oops"), "--metadata is not valid JSON"),
        (("--metadata", json.dumps({"k": "x" * 5000})), "at most 4096"),
    ]:
        for command in (("tokens", "update", made["id"]), (*CREATE, "--name", "bad")):
            result = cli(*command, *args)
            assert result.exit_code != 0, (command, args)
            assert message in result.stderr, (args, result.stderr)
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    listed = json.loads(cli("tokens", "list", "-a", "acme", "--json").stdout)["items"]
    assert [(t["name"], t["rate_limits"][0]["limit"]) for t in listed] == [("kept", 10)]
