"""`tallykey tokens import FILE` (SPEC §16): JSON lines in, counts out, `-` for standard
input; idempotent, and the imported key then verifies with its original string."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from tallykey.auth.verifier import Verifier

from .test_cli import Cli, cli  # noqa: F401 - the fixture


def test_the_cli_imports_json_lines_from_a_file_or_stdin(
        cli: Cli, tmp_path: Path) -> None:  # noqa: F811 - the fixture
    keys = ["legacy_" + secrets.token_urlsafe(24) for _ in range(3)]
    lines = "\n".join(json.dumps({"key": key, "name": f"legacy {n}", "expires_in_days": 30,
                                  "scopes": ["employees:read"]})
                      for n, key in enumerate(keys)) + "\n\n"
    path = tmp_path / "keys.jsonl"
    path.write_text(lines)
    done = cli("tokens", "import", str(path), "-a", "acme")
    assert done.exit_code == 0, done.output
    assert "imported 3 keys, 0 already there, 0 unavailable" in done.stdout
    again = cli("tokens", "import", "-", "-a", "acme", "--json", stdin=lines)
    assert again.exit_code == 0, again.output
    answer = json.loads(again.stdout)
    assert (answer["created"], answer["existing"]) == (0, 3)
    assert all(k["prefix"].startswith("imported:") for k in answer["keys"])
    listed = json.loads(cli("tokens", "list", "-a", "acme", "--kind", "imported",
                            "--json").stdout)["items"]
    assert len(listed) == 3 and all(keys[0] not in json.dumps(t) for t in listed)
    verifier = Verifier(background=False)
    try:
        assert verifier.verify(f"Bearer {keys[1]}", "203.0.113.5",
                               ("employees:read",)).allowed
    finally:
        verifier.close()


def test_a_bad_line_is_refused_with_its_number_and_imports_nothing(
        cli: Cli) -> None:  # noqa: F811 - the fixture
    good = json.dumps({"key": "legacy_" + secrets.token_urlsafe(24), "name": "ok",
                       "expires_in_days": 30})
    for stdin, says in [(good + "\nnot json\n", "line 2 is not JSON"),
                        (good + '\n{"key": "short", "name": "x", "expires_in_days": 7}\n',
                         "keys[1].key is 5 characters long"),
                        (good + '\n{"token": "x"}\n', "unknown fields: token")]:
        done = cli("tokens", "import", "-", "-a", "acme", stdin=stdin)
        assert done.exit_code != 0 and says in done.output, done.output
    listed = cli("tokens", "list", "-a", "acme", "--kind", "imported", "--json")
    assert json.loads(listed.stdout)["items"] == []
