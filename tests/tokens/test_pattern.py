"""The published secret-scanning pattern: finds issued tokens wherever they are pasted,
and nothing in a corpus of look-alikes. The gitleaks/TruffleHog and GitHub strings in the
docs are checked too (their regex engines agree with Python's on these ASCII constructs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tallykey.tokens import format as token_format

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
INTEGRATIONS = (ROOT / "docs" / "integrations.md").read_text()

SCANNER_REGEX = r"\btlk_[a-z0-9]{1,8}_[0-9A-Za-z]{61}\b"  # gitleaks, TruffleHog, README
GITHUB_FORMAT = r"tlk_[a-z0-9]{1,8}_[0-9A-Za-z]{61}"
GITHUB_BEFORE = r"\A|[^0-9A-Za-z_]"
GITHUB_AFTER = r"\z|[^0-9A-Za-z_]"


def _github_as_python() -> re.Pattern[str]:
    """GitHub's three fields as one regex: before, the secret (group 1), after."""
    before = GITHUB_BEFORE.replace(r"\A", "^")
    after = GITHUB_AFTER.replace(r"\z", r"\Z")
    return re.compile(f"(?:{before})({GITHUB_FORMAT})(?={after})", re.MULTILINE)


PATTERNS = {
    "TOKEN_PATTERN": token_format.TOKEN_PATTERN,
    "scanners": re.compile(SCANNER_REGEX),
    "github": _github_as_python(),
}


def found(pattern: re.Pattern[str], text: str) -> list[str]:
    return [m.group(m.lastindex or 0) for m in pattern.finditer(text)]


TOKENS = [str(token_format.generate(region)) for region in ("eu1", "us1", "a", "abcdefgh")]

SURROUNDINGS = [
    "{t}",
    "{t}\n",
    '"{t}"',
    "'{t}'",
    "`{t}`",
    "TALLYKEY_TOKEN={t}",
    "export TALLYKEY_TOKEN='{t}'",
    "token: {t}  # CRM",
    "Authorization: Bearer {t}",
    "Authorization: Basic {t}\r\n",
    "curl -H 'Authorization: Bearer {t}' https://api-eu1.example.com/core/v3/info",
    "https://hooks.example.com/x?token={t}&next=1",
    "https://user:{t}@api.example.com/",
    "see ({t}).",
    "first {t}, second",
    "<token>{t}</token>",
    "tokens=[{t};{t}]",
    "# {t}\n",
]


@pytest.mark.parametrize("name", PATTERNS)
@pytest.mark.parametrize("surrounding", SURROUNDINGS)
def test_issued_tokens_are_found_in_text(name: str, surrounding: str) -> None:
    for token in TOKENS:
        text = surrounding.format(t=token)
        assert found(PATTERNS[name], text) == [token] * text.count(token), (name, text)


@pytest.mark.parametrize("name", PATTERNS)
def test_issued_tokens_are_found_in_json_and_code(name: str) -> None:
    document = json.dumps({"crm": {"token": TOKENS[0], "backup": [TOKENS[1], TOKENS[2]]}},
                          indent=2)
    code = f'client = Client("{TOKENS[3]}", region="abcdefgh")\nOTHER = "{TOKENS[0]}"\n'
    assert found(PATTERNS[name], document) == TOKENS[:3]
    assert found(PATTERNS[name], code) == [TOKENS[3], TOKENS[0]]


def look_alikes() -> list[str]:
    token = TOKENS[0]
    body = token[len("tlk_eu1_"):]
    return [
        "ghp_" + "A1b2C3d4E5f6G7h8I9j0" * 2,
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV",
        "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc" * 2,
        "rk_live_51H" + "x" * 90,
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "glpat-" + "x" * 20,
        "AKIAIOSFODNN7EXAMPLE",
        "pypi-AgEIcHlwaS5vcmcCJGI" + "x" * 60,
        "sk-proj-" + body,
        token[:-1],                           # truncated
        token[:40],
        token[:len("tlk_eu1_")],
        token + "x",                          # characters appended
        token + "0",
        token + "_old",
        "x" + token,                          # glued to a word in front
        "0" + token,
        "_" + token,
        "tlk_EU1_" + body,                    # uppercase region
        "tlk_Eu1_" + body,
        "TLK_eu1_" + body,                    # wrong prefix
        "tlx_eu1_" + body,
        "tk_eu1_" + body,
        "tlk-eu1-" + body,
        "tlk_eu1-" + body,
        "tlk__" + body,                       # no region
        "tlk_eu1" + body,
        "tlk_toolongrg_" + body,              # region of 9
        "tlk_eu-1_" + body,
        "tlk_eu1_" + body[:30] + "-" + body[31:],
        "tlk_eu1_" + body[:30] + " " + body[30:],
        "tlk_eu1_" + body[:30] + "\n" + body[30:],
        "tlk_eu1_" + body[:-1] + "é",
        "tlk_eu1_" + "=" * 61,
    ]


@pytest.mark.parametrize("name", PATTERNS)
def test_look_alikes_are_not_found(name: str) -> None:
    for text in look_alikes():
        for wrapped in (text, f'"{text}"', f"KEY={text}\n"):
            assert found(PATTERNS[name], wrapped) == [], (name, wrapped)


def test_the_published_strings_are_the_tested_ones() -> None:
    assert token_format.TOKEN_PATTERN.pattern == SCANNER_REGEX
    assert f"    {SCANNER_REGEX}\n" in README
    assert f"regex = '''{SCANNER_REGEX}'''" in INTEGRATIONS  # gitleaks
    assert f"token: '{SCANNER_REGEX}'" in INTEGRATIONS  # TruffleHog
    assert f"| Secret format | `{GITHUB_FORMAT}` |" in INTEGRATIONS
    for field in (GITHUB_BEFORE, GITHUB_AFTER):  # escaped for the Markdown table
        assert f"`{field.replace('|', chr(92) + '|')}`" in INTEGRATIONS
    assert f"type `{GITHUB_BEFORE}` and `{GITHUB_AFTER}`" in INTEGRATIONS
