"""Scopes, roles, and what a user may do where: the pure rules, no database."""

from __future__ import annotations

from dataclasses import dataclass

from tallykey.accounts.scopes import BUILT_IN, DEMO_CATALOG
from tallykey.actor import ADMIN, AUDITOR, MEMBER, ROLES

__all__ = ["ADMIN", "AUDITOR", "MEMBER", "ROLES"]  # the roles, re-exported for rules

#: The default (demo) catalog's scopes with what they allow; a deployment's own catalog
#: is `Runtime.catalog` (see `accounts.scopes`).
SCOPES: dict[str, str] = DEMO_CATALOG.descriptions()
#: Scopes only administrators hold, whatever their workspace grants say (built in).
ADMIN_ONLY_SCOPES = frozenset(s.name for s in BUILT_IN)
MEMBER_SCOPES = DEMO_CATALOG.member_scopes


@dataclass(frozen=True, slots=True)
class Permissions:
    """What one user may do right now: per workspace, the scopes they hold there.

    Admins see every workspace of their account with every scope of the catalog
    (`everything`). An auditor holds no scope anywhere, whatever grants its user row
    still carries: a token of theirs (kept from an earlier role) grants nothing.
    """

    role: str
    active: bool
    by_workspace: dict[str, frozenset[str]]
    everything: frozenset[str] = DEMO_CATALOG.all

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN

    @property
    def is_auditor(self) -> bool:
        return self.role == AUDITOR

    def scopes_in(self, workspace_id: str | None) -> frozenset[str]:
        """Scopes held in one workspace, or in at least one of them when `workspace_id`
        is None (what a new personal token may ask for; it is checked per workspace on
        every request)."""
        if not self.active or self.role == AUDITOR:
            return frozenset()
        if self.is_admin:
            return self.everything
        if workspace_id is None:
            held: set[str] = set()
            for scopes in self.by_workspace.values():
                held |= scopes
            return frozenset(held)
        return self.by_workspace.get(workspace_id, frozenset())

