"""Scopes, roles, and what a user may do where: the pure rules, no database."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ADMIN = "admin"
MEMBER = "member"
ROLES = (ADMIN, MEMBER)

#: Every scope a token can carry, with what it allows.
SCOPES: dict[str, str] = {
    "employees:read": "Read employees of the workspaces the token can see",
    "employees:write": "Create and change employees",
    "audit:read": "Read the account's audit log",
    "tokens:manage": "Manage tokens, users and policies through the management API",
}
#: Scopes only administrators hold, whatever their workspace grants say.
ADMIN_ONLY_SCOPES = frozenset({"audit:read", "tokens:manage"})
MEMBER_SCOPES = tuple(scope for scope in SCOPES if scope not in ADMIN_ONLY_SCOPES)


@dataclass(frozen=True, slots=True)
class Permissions:
    """What one user may do right now: per workspace, the scopes they hold there.

    Admins see every workspace of their account with every scope.
    """

    role: str
    active: bool
    by_workspace: dict[str, frozenset[str]]

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN

    def scopes_in(self, workspace_id: str | None) -> frozenset[str]:
        """Scopes held in one workspace, or across all of them when `workspace_id` is None."""
        if not self.active:
            return frozenset()
        if self.is_admin:
            return frozenset(SCOPES)
        if workspace_id is None:
            held: set[str] = set()
            for scopes in self.by_workspace.values():
                held |= scopes
            return frozenset(held)
        return self.by_workspace.get(workspace_id, frozenset())

    def visible_workspaces(self, all_workspaces: Iterable[str]) -> frozenset[str]:
        if not self.active:
            return frozenset()
        if self.is_admin:
            return frozenset(all_workspaces)
        return frozenset(self.by_workspace)


def unknown_scopes(scopes: Iterable[str]) -> list[str]:
    return sorted(set(scopes) - set(SCOPES))
