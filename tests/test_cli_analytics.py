"""`tallykey analytics verifications` (SPEC §16): the requests a real verifier counted and
flushed, per token, identity, outcome and workspace, as a table, JSON and CSV with the
same numbers; bad parameters are one line and a non-zero exit."""

from __future__ import annotations

import csv
import json

import pytest

from tallykey.auth.verifier import Verifier

from .test_cli import Cli, cli  # noqa: F401 - the fixture


@pytest.fixture
def used(cli: Cli) -> dict[str, str]:  # noqa: F811 - the fixture
    """Two tokens, one of identity cust_1: 4 allowed and 2 refused requests, and 3."""
    assert cli("identities", "create", "-a", "acme", "--external-id", "cust_1").exit_code == 0
    made = {}
    for name, extra in (("crm", ["--identity", "cust_1"]), ("erp", [])):
        created = cli("tokens", "create", "-a", "acme", "--user", "boss@acme.test", "--days",
                      "30", "--name", name, "--kind", "application", "--scope",
                      "employees:read", *extra, "--json")
        assert created.exit_code == 0, created.output
        made[name] = json.loads(created.stdout)
    verifier = Verifier(background=False)  # reads TALLYKEY_* as set by `cli`
    try:
        for name, times, scopes in (("crm", 4, ["employees:read"]), ("crm", 2, ["nope:x"]),
                                    ("erp", 3, [])):
            for _ in range(times):
                verifier.verify(f"Bearer {made[name]['token']}", "198.51.100.2", scopes)
        verifier.flush_usage()
    finally:
        verifier.close()
    return {name: token["id"] for name, token in made.items()}


def test_json_csv_and_table_carry_the_requests_sent(cli: Cli, used: dict[str, str]  # noqa: F811
                                                    ) -> None:
    answer = cli("analytics", "verifications", "-a", "acme", "--json")
    assert answer.exit_code == 0, answer.output
    body = json.loads(answer.stdout)
    assert (body["interval"], body["group_by"]) == ("day", "token")
    assert {s["key"]: (s["label"], s["allowed"], s["refused"]) for s in body["series"]} == {
        used["crm"]: ("crm", 4, 2), used["erp"]: ("erp", 3, 0)}
    as_csv = cli("analytics", "verifications", "-a", "acme", "--csv")
    rows = list(csv.DictReader(as_csv.stdout.splitlines()))
    assert {r["key"]: (int(r["allowed"]), int(r["refused"])) for r in rows} == {
        used["crm"]: (4, 2), used["erp"]: (3, 0)}
    [reason] = [c for c in rows[0] if c.startswith("refused_")]
    assert [int(r[reason]) for r in rows if r["key"] == used["crm"]] == [2]
    by_identity = json.loads(cli("analytics", "verifications", "-a", "acme", "--group-by",
                                 "identity", "--interval", "hour", "--json").stdout)
    assert {(s["label"], s["allowed"], s["refused"]) for s in by_identity["series"]} == {
        ("cust_1", 4, 2), (None, 3, 0)}
    only = json.loads(cli("analytics", "verifications", "-a", "acme", "--identity",
                          "cust_1", "--group-by", "outcome", "--json").stdout)
    assert sorted((s["key"], s["allowed"] + s["refused"]) for s in only["series"]) == \
        sorted([("allowed", 4), (reason.removeprefix("refused_"), 2)])
    table = cli("analytics", "verifications", "-a", "acme", "--token", used["erp"])
    assert table.exit_code == 0
    [header, row] = [line.split("\t") for line in table.stdout.splitlines()]
    assert header[:5] == ["key", "label", "start", "allowed", "refused"]
    assert row[0] == used["erp"] and row[3:5] == ["3", "0"]


@pytest.mark.parametrize(("args", "said"), [
    (["--interval", "week"], "interval must be hour or day"),
    (["--group-by", "ip"], "group_by must be token, identity, outcome or workspace"),
    (["--since", "2020-01-01", "--until", "2023-01-01"], "covers at most 400 days"),
    (["--since", "soon"], "is not an ISO 8601 date"),
    (["--identity", "nobody"], "No such identity"),
    (["--workspace", "nowhere"], "No such workspace"),
])
def test_bad_parameters_are_one_line(cli: Cli, args: list[str], said: str  # noqa: F811
                                     ) -> None:
    refused = cli("analytics", "verifications", "-a", "acme", *args)
    assert refused.exit_code != 0 and said in refused.output
    assert "Traceback" not in refused.output
