"""The scope catalog file (SPEC §11): what a platform may write, and one clear line for
everything it may not."""

from __future__ import annotations

from pathlib import Path

import pytest

from tallykey.accounts.scopes import DEMO_CATALOG, load_catalog
from tallykey.errors import CatalogError

SHOP = """
[scopes."orders:read"]
description = "Read orders"

[scopes."orders:write"]
description = "Create and change orders"

[scopes."invoices:read"]
description = "Read invoices"
admin_only = true
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scopes.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_without_a_file_the_demo_catalog_with_the_built_in_scopes() -> None:
    catalog = load_catalog(None)
    assert catalog is DEMO_CATALOG
    assert catalog.names == ("employees:read", "employees:write", "tokens:manage",
                             "audit:read", "tokens:renew_self")
    assert catalog.admin_only == {"tokens:manage", "audit:read", "tokens:renew_self"}
    assert catalog.member_scopes == ("employees:read", "employees:write")


def test_a_platform_catalog_replaces_the_demo_scopes(tmp_path: Path) -> None:
    catalog = load_catalog(write(tmp_path, SHOP))
    assert catalog.names == ("orders:read", "orders:write", "invoices:read",
                             "tokens:manage", "audit:read", "tokens:renew_self")
    assert "employees:read" not in catalog
    assert catalog.describe("orders:write") == "Create and change orders"
    assert catalog.admin_only == {"invoices:read", "tokens:manage", "audit:read",
                                  "tokens:renew_self"}
    assert catalog.member_scopes == ("orders:read", "orders:write")
    assert catalog.unknown(["orders:read", "orders:delete", "employees:read"]) == [
        "employees:read", "orders:delete"]


@pytest.mark.parametrize(("text", "fragment"), [
    ("[scopes", "not valid TOML"),
    ("", "defines no scopes"),
    ("title = 'x'\n[scopes.'a:b']\ndescription = 'x'", "unknown top-level key 'title'"),
    ("[scopes.'orders read']\ndescription = 'x'", "'orders read' is not a valid scope name"),
    ("[scopes.'tokens:manage']\ndescription = 'x'", "'tokens:manage' is built in"),
    ("[scopes]\n'a:b' = 'text'", "'a:b' must be a table"),
    ("[scopes.'a:b']\nadmin_only = true", "'a:b' needs a description"),
    ("[scopes.'a:b']\ndescription = '  '", "'a:b' needs a description"),
    ("[scopes.'a:b']\ndescription = 'x'\nadmin_only = 'yes'", "admin_only must be true or"),
    ("[scopes.'a:b']\ndescription = 'x'\nlabel = 'y'", "unknown key 'label'"),
    ("[scopes.'a:b']\ndescription = \"two\\nlines\"", "one line"),
])
def test_a_malformed_file_is_refused_with_one_line_naming_the_problem(
        tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(CatalogError) as refused:
        load_catalog(path)
    message = str(refused.value)
    assert fragment in message
    assert "\n" not in message
    assert str(path) in message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot be read"):
        load_catalog(tmp_path / "nope.toml")
