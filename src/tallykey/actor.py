"""Who is acting: a user of an account with a role, or the operator running the CLI on the
server. Every service takes an `Actor`, and the audit trail records one; it sits at the
bottom, with the roles it can have."""

from __future__ import annotations

from dataclasses import dataclass

ADMIN = "admin"
MEMBER = "member"
#: Reads the account's tokens, usage and audit log; changes nothing, creates no token
#: (SPEC §17). The API and the console refuse every change it asks for
#: (`api.deps.management_actor`, `console.web.checked_form`), and the audit trail refuses
#: to record one (`audit.trail.record`).
AUDITOR = "auditor"
ROLES = (ADMIN, MEMBER, AUDITOR)
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
    def is_auditor(self) -> bool:
        return self.role == AUDITOR

    @property
    def reads_all(self) -> bool:
        """Sees every token of the account, its usage and its audit log: an administrator
        (or the operator), or an auditor (read-only)."""
        return self.role in (ADMIN, AUDITOR)

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
