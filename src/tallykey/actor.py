"""Who is acting: a user of an account with a role, or the operator running the CLI on the
server. Every service takes an `Actor`, and the audit trail records one; it sits at the
bottom, with the roles it can have."""

from __future__ import annotations

from dataclasses import dataclass

ADMIN = "admin"
MEMBER = "member"
ROLES = (ADMIN, MEMBER)
#: `Actor.via` of what tallykey does by itself (containment, SPEC §17).
SYSTEM = "system"


@dataclass(frozen=True, slots=True)
class Actor:
    account_id: str
    user_id: str | None
    role: str
    label: str
    ip: str | None = None
    via: str = "api"
    #: SHA-256 (hex) of the token that authenticated this request, when a token did: a
    #: secret in its grace period may not manage its own token (`tokens.service`).
    token_digest: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN

    @property
    def is_operator(self) -> bool:
        """The operator (CLI on the server) acts with an admin's powers but is no user."""
        return self.user_id is None

    @property
    def kind(self) -> str:
        if self.via == SYSTEM:
            return SYSTEM
        return "operator" if self.is_operator else "user"

    @classmethod
    def system(cls, account_id: str, label: str) -> Actor:
        """tallykey acting on its own (no user, no operator), with an admin's powers."""
        return cls(account_id, None, ADMIN, label, None, SYSTEM)

    @classmethod
    def operator(cls, account_id: str) -> Actor:
        return cls(account_id, None, ADMIN, "operator (CLI)", None, "cli")
