"""docs/settings.md is the one settings reference: every field of `Settings` is in it,
the allow-list of variables that are not settings is documented, and README and the
other docs point to it."""

from __future__ import annotations

import re
from pathlib import Path

from tallykey.settings import NON_SETTING_PREFIXES, NON_SETTING_VARIABLES, setting_names

ROOT = Path(__file__).parents[1]
REFERENCE = ROOT / "docs" / "settings.md"


def documented() -> set[str]:
    """The settings that have a row of their own in a table of docs/settings.md."""
    settings_part = REFERENCE.read_text().split("## Variables that are not settings")[0]
    rows = re.findall(r"^\| `(TALLYKEY_[A-Z0-9_]+)` \|", settings_part, re.MULTILINE)
    return set(rows)


def test_every_setting_in_settings_py_has_a_row_in_docs_settings_md() -> None:
    missing = sorted(set(setting_names()) - documented())
    assert not missing, ("settings missing from docs/settings.md (add a row: name, "
                         f"default, what it does, read by): {missing}")


def test_docs_settings_md_documents_no_setting_that_does_not_exist() -> None:
    extra = sorted(documented() - set(setting_names()))
    assert not extra, f"docs/settings.md documents settings settings.py lacks: {extra}"


def test_the_variables_that_are_not_settings_are_documented() -> None:
    text = REFERENCE.read_text()
    for name in (*NON_SETTING_VARIABLES, *NON_SETTING_PREFIXES):
        assert f"`{name}" in text, name


def test_readme_and_the_guides_point_to_the_reference() -> None:
    for page in ("README.md", "docs/deployment.md", "docs/operations.md"):
        assert "settings.md" in (ROOT / page).read_text(), page
