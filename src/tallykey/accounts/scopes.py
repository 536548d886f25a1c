"""The scope catalog: the permissions a platform's API knows (SPEC §11).

A platform describes its own scopes in a TOML file named by `TALLYKEY_SCOPES_FILE`:

    [scopes."orders:read"]
    description = "Read orders"

    [scopes."orders:write"]
    description = "Create and change orders"
    admin_only = false

Without a file the demo platform's catalog is used. `tokens:manage`, `audit:read` and
`tokens:renew_self` always exist and only administrators hold them. A malformed file is
refused at start with one line naming the problem (`CatalogError`).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tallykey.errors import CatalogError

#: A scope name: no spaces (identity headers carry scopes space separated), no quotes.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:*/-]{0,99}")
MAX_DESCRIPTION = 500
MAX_SCOPES = 500


@dataclass(frozen=True, slots=True)
class Scope:
    name: str
    description: str
    admin_only: bool = False


#: Scopes every deployment has: they guard tallykey itself, so only admins hold them.
BUILT_IN = (
    Scope("tokens:manage", "Manage tokens, users and policies through the management API",
          admin_only=True),
    Scope("audit:read", "Read the account's audit log", admin_only=True),
    Scope("tokens:renew_self", "Renew the token itself before it expires "
          "(POST /api/v1/tokens/self/renew), within the account's maximum validity",
          admin_only=True),
)
#: The demo platform's scopes: the catalog when `TALLYKEY_SCOPES_FILE` is not set.
DEMO = (
    Scope("employees:read", "Read employees of the workspaces the token can see"),
    Scope("employees:write", "Create and change employees"),
)


class ScopeCatalog:
    """The scopes tokens may carry, in the catalog's order (the platform's first)."""

    def __init__(self, scopes: Iterable[Scope], source: str = "the demo catalog") -> None:
        self.source = source
        self._scopes: dict[str, Scope] = {}
        for scope in (*scopes, *BUILT_IN):
            self._scopes.setdefault(scope.name, scope)
        self.names: tuple[str, ...] = tuple(self._scopes)
        self.all: frozenset[str] = frozenset(self._scopes)
        self.admin_only: frozenset[str] = frozenset(
            s.name for s in self._scopes.values() if s.admin_only)
        #: What workspace grants may hold: everything that is not admin-only.
        self.member_scopes: tuple[str, ...] = tuple(
            name for name in self.names if name not in self.admin_only)

    def __contains__(self, name: object) -> bool:
        return name in self._scopes

    def scopes(self) -> list[Scope]:
        return list(self._scopes.values())

    def describe(self, name: str) -> str:
        scope = self._scopes.get(name)
        return scope.description if scope else ""

    def descriptions(self, names: Iterable[str] | None = None) -> dict[str, str]:
        """name -> description, in catalog order, for `names` (default: all)."""
        wanted = self.all if names is None else set(names)
        return {n: s.description for n, s in self._scopes.items() if n in wanted}

    def unknown(self, names: Iterable[str]) -> list[str]:
        return sorted(set(names) - self.all)


DEMO_CATALOG = ScopeCatalog(DEMO)


def load_catalog(path: Path | str | None) -> ScopeCatalog:
    """The catalog in `path` (TOML), or the demo catalog when `path` is None or empty.

    Raises `CatalogError` with one line naming the file and the problem."""
    if path is None or not str(path).strip():
        return DEMO_CATALOG
    where = f"TALLYKEY_SCOPES_FILE {str(path)!r}"
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise CatalogError(f"{where} cannot be read: {error.strerror or error}.") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise CatalogError(f"{where} is not UTF-8 text.") from None
    except tomllib.TOMLDecodeError as error:
        raise CatalogError(f"{where} is not valid TOML: {error}.") from None
    return ScopeCatalog(_entries(data, where), source=str(path))


def _entries(data: Mapping[str, object], where: str) -> list[Scope]:
    extra = sorted(set(data) - {"scopes"})
    if extra:
        raise CatalogError(f"{where}: unknown top-level key {extra[0]!r}; "
                           'only [scopes."name"] tables are allowed.')
    table = data.get("scopes")
    if not isinstance(table, dict) or not table:
        raise CatalogError(f'{where} defines no scopes; add [scopes."orders:read"] tables '
                           'with a description.')
    if len(table) > MAX_SCOPES:
        raise CatalogError(f"{where} defines {len(table)} scopes; at most {MAX_SCOPES}.")
    built_in = {s.name for s in BUILT_IN}
    entries: list[Scope] = []
    for name, entry in table.items():
        label = f"{where}: scope {name!r}"
        if not _NAME.fullmatch(name):
            raise CatalogError(f"{label} is not a valid scope name (letters, digits and "
                               "_ . : * / - only, no spaces, at most 100 characters).")
        if name in built_in:
            raise CatalogError(f"{label} is built in; remove it from the file.")
        if not isinstance(entry, dict):
            raise CatalogError(f'{label} must be a table: [scopes."{name}"] with a '
                               "description.")
        unknown = sorted(set(entry) - {"description", "admin_only"})
        if unknown:
            raise CatalogError(f"{label} has an unknown key {unknown[0]!r}; "
                               "use description and admin_only.")
        description = entry.get("description")
        if not isinstance(description, str) or not description.strip():
            raise CatalogError(f"{label} needs a description (a non-empty string).")
        if len(description) > MAX_DESCRIPTION or any(ord(c) < 32 for c in description):
            raise CatalogError(f"{label}: the description must be one line of at most "
                               f"{MAX_DESCRIPTION} characters.")
        admin_only = entry.get("admin_only", False)
        if not isinstance(admin_only, bool):
            raise CatalogError(f"{label}: admin_only must be true or false.")
        entries.append(Scope(name, description.strip(), admin_only))
    return entries
