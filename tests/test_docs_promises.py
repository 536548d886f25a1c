"""What README.md, SECURITY.md and docs/ promise, checked against the code:

- every `tests/…::name` they cite exists (the file, and a test of that name in it), and
  every bare `test_…` name they cite is a test somewhere under tests/;
- every source file they name (`console/web.py`, `accounts/bootstrap.py`…) exists;
- every "`TALLYKEY_X` (default N)" they state is the setting's real default;
- the numbers they promise (session 12 hours, second factor 10 minutes, body 256 KiB,
  audit cursors up to 2^31-1, 200 concurrent revocations…) are the constants the code
  and the tests use, and each sentence is still in the document;
- README's webhook event list names every event a webhook can carry;
- the advice SECURITY.md gives after a stolen database (rotate a webhook secret twice)
  works.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tallykey.actor import Actor
from tallykey.settings import Settings

from .conftest import World
from .console.conftest import admin, new_client  # noqa: F401 - fixtures used below

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "SECURITY.md", *sorted((ROOT / "docs").glob("*.md"))]
TEXT = {path.name: path.read_text() for path in DOCS}
ALL_TEXT = "\n".join(TEXT.values())
SOURCE = ROOT / "src" / "tallykey"

TEST_REF = re.compile(r"(tests/[A-Za-z0-9_/]+\.py)(?:::([A-Za-z0-9_]+))?")
BARE_TEST = re.compile(r"`(test_[a-z0-9_]+)`")
FILE_REF = re.compile(r"`((?:[a-z_]+/)*[a-z_0-9]+\.py)`")
DEFAULT = re.compile(r"`TALLYKEY_([A-Z0-9_]+)`(?:=|[^`.;|]{0,30}?\bdefault |\s*\()\s*"
                     r"(\d+(?:\.\d+)?)")


def defined_tests(path: Path) -> set[str]:
    """The test functions (module level or in classes) defined in one file."""
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_")}


ALL_TESTS = {name for path in (ROOT / "tests").rglob("test_*.py")
             for name in defined_tests(path)}
CITED = sorted({(m.group(1), m.group(2) or "") for m in TEST_REF.finditer(ALL_TEXT)})


@pytest.mark.parametrize(("path", "name"), CITED, ids=[f"{p}::{n}" for p, n in CITED])
def test_every_cited_test_exists(path: str, name: str) -> None:
    cited = ROOT / path
    assert cited.is_file(), f"{path} is cited but does not exist"
    if name:
        assert name in defined_tests(cited), f"{path}::{name} is cited but does not exist"


def test_every_bare_test_name_is_a_test() -> None:
    names = {m.group(1) for m in BARE_TEST.finditer(ALL_TEXT)}
    assert len(names) > 10
    assert names <= ALL_TESTS, sorted(names - ALL_TESTS)


def test_every_named_source_file_exists() -> None:
    named = {m.group(1) for m in FILE_REF.finditer(ALL_TEXT)}
    assert "accounts/bootstrap.py" in named
    missing = []
    for name in sorted(named):
        if "/" in name:
            found = (SOURCE / name).is_file() or (ROOT / name).is_file()
        else:
            found = (any(SOURCE.rglob(name)) or any((ROOT / "tests").rglob(name))
                     or (ROOT / name).is_file())
        if not found:
            missing.append(name)
    assert not missing, missing


def test_every_stated_setting_default_is_the_real_one() -> None:
    fields = Settings.model_fields
    stated = [(m.group(1).lower(), float(m.group(2))) for m in DEFAULT.finditer(ALL_TEXT)]
    assert len(stated) >= 8, stated
    wrong = [(name, said, fields[name].default) for name, said in stated
             if name not in fields or float(fields[name].default) != said]
    assert not wrong, wrong


def _constant(module: str, name: str) -> Callable[[], Any]:
    def read() -> Any:
        return getattr(__import__(module, fromlist=[name]), name)
    return read


def _test_default(path: str, name: str) -> Callable[[], Any]:
    """A test's own default, e.g. REVOCATIONS = int(os.environ.get(…, "200"))."""
    def read() -> Any:
        found = re.search(rf'^{name} = .*"(\d+)"', (ROOT / path).read_text(), re.M)
        assert found, name
        return int(found.group(1))
    return read


#: (document, the sentence as it is written there, what the code holds, what it says)
PROMISES: list[tuple[str, str, Callable[[], Any], Any]] = [
    ("SECURITY.md", "12-hour lifetime",
     _constant("tallykey.people.sessions", "SESSION_LIFETIME"), timedelta(hours=12)),
    ("SECURITY.md", "a session awaiting its second factor lives 10 minutes",
     _constant("tallykey.people.sessions", "PENDING_LIFETIME"), timedelta(minutes=10)),
    ("SECURITY.md", "spent once, 10 minutes",
     _constant("tallykey.people.sso", "SIGN_IN_LIFETIME"), timedelta(minutes=10)),
    ("SECURITY.md", "request bodies over 256 KiB are refused",
     _constant("tallykey.web.bounds", "MAX_BODY_BYTES"), 256 * 1024),
    ("SECURITY.md", "more than 100 header lines are refused",
     _constant("tallykey.web.bounds", "MAX_HEADER_COUNT"), 100),
    ("SECURITY.md", "bounds the header section (32 KiB",
     _constant("tallykey.web.bounds", "MAX_HEADER_BYTES"), 32 * 1024),
    ("SECURITY.md", "Names 100 characters",
     _constant("tallykey.tokens.policy", "MAX_NAME_LENGTH"), 100),
    ("SECURITY.md", "descriptions 1,000",
     _constant("tallykey.tokens.policy", "MAX_DESCRIPTION_LENGTH"), 1000),
    ("SECURITY.md", "allow-lists 100 entries",
     _constant("tallykey.tokens.policy", "MAX_ALLOWLIST_ENTRIES"), 100),
    ("SECURITY.md", "failed sign-ins: 10 per\n  network and minute",
     _constant("tallykey.accounts.sign_in", "NETWORK_FAILURES_PER_MINUTE"), 10),
    ("SECURITY.md", "a back-off after 5 consecutive failures",
     _constant("tallykey.accounts.sign_in", "FREE_FAILURES"), 5),
    ("SECURITY.md", "for at most 15 minutes at a time",
     _constant("tallykey.accounts.sign_in", "MAX_BLOCK"), timedelta(minutes=15)),
    ("deployment.md", "Tested with 200 concurrent revocations in two accounts",
     _test_default("tests/e2e/test_faults.py", "REVOCATIONS"), 200),
]


@pytest.mark.parametrize(("document", "sentence", "actual", "promised"), PROMISES,
                         ids=[p[1][:40] for p in PROMISES])
def test_a_numeric_promise_matches_the_code(document: str, sentence: str,
                                            actual: Callable[[], Any],
                                            promised: Any) -> None:
    assert sentence in TEXT[document], f"{document} no longer says {sentence!r}"
    assert actual() == promised


def test_audit_cursors_beyond_2_31_minus_1_are_a_422(admin: tuple[TestClient, str]  # noqa: F811
                                                    ) -> None:
    assert "audit cursors beyond 2^31-1 (2147483647" in TEXT["SECURITY.md"]
    client, _ = admin
    assert client.get("/console/audit", params={"before": 2**31 - 1}).status_code == 200
    assert client.get("/console/audit", params={"before": 2**31}).status_code == 422


def test_readme_lists_every_webhook_event() -> None:
    from tallykey.notify.webhooks import EVENT_TYPES

    sentence = re.search(r"Webhooks \((`token\.created`.*?)\)", TEXT["README.md"], re.S)
    assert sentence
    listed = {"token." + part.strip("`.").removeprefix("token.")
              for part in re.findall(r"`[^`]+`", sentence.group(1))}
    kinds = set(EVENT_TYPES)
    assert listed == kinds, (sorted(kinds - listed), sorted(listed - kinds))


def test_a_second_rotation_ends_a_stolen_webhook_secret_at_once(world: World) -> None:
    """SECURITY.md's advice after a stolen database: rotate, then rotate again."""
    from tallykey.notify.webhooks import signing_secrets

    assert "rotate **again**" in TEXT["SECURITY.md"]
    actor = Actor.operator(world.acme_id)
    endpoint, stolen = world.rt.webhooks.add(actor, "https://8.8.8.8/tallykey-hook")
    _, first = world.rt.webhooks.rotate_secret(actor, endpoint.id)
    now = world.rt.clock.now()
    assert signing_secrets(world.rt.webhooks.get(actor, endpoint.id), now) == [first, stolen]
    _, second = world.rt.webhooks.rotate_secret(actor, endpoint.id)
    assert signing_secrets(world.rt.webhooks.get(actor, endpoint.id), now) == [second, first]
    assert stolen not in {first, second}
