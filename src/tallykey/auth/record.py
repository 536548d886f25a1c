"""What verification needs to know about a token, loaded in one indexed query and cached.

A `TokenRecord` is an immutable snapshot of the token, the secret that matched, the
owner's current permissions and the account's policy: every verdict is computed from it
without touching the database.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from tallykey.accounts.models import Account, User, WorkspaceGrant
from tallykey.accounts.permissions import Permissions
from tallykey.tokens.models import APPLICATION, Token, TokenSecret

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class TokenRecord:
    token_id: str
    account_id: str
    account_slug: str
    account_name: str
    region: str
    kind: str
    name: str
    prefix: str
    workspace_id: str | None
    expires_at: datetime
    revoked_at: datetime | None
    secret_retires_at: datetime | None
    token_networks: tuple[IpNetwork, ...]
    account_networks: tuple[IpNetwork, ...]
    #: Effective scopes: the token's scopes ∩ the owner's current permissions.
    scopes: frozenset[str]
    token_scopes: frozenset[str]
    #: Workspaces whose data the token may see; None means all of the account's.
    workspaces: frozenset[str] | None
    owner_id: str | None
    owner_email: str | None
    owner_active: bool

    def allows_ip(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        for networks in (self.token_networks, self.account_networks):
            if networks and not any(address in network for network in networks):
                return False
        return True


def load_record(session: Session, secret_hash: str) -> TokenRecord | None:
    """The record for a token secret hash, or None. One round trip: the secret's unique
    index joined to its token, account, owner and the owner's workspace grants."""
    rows = session.execute(
        select(TokenSecret.retires_at, Token, Account, User, WorkspaceGrant)
        .join(Token, Token.id == TokenSecret.token_id)
        .join(Account, Account.id == Token.account_id)
        .outerjoin(User, User.id == Token.owner_id)
        .outerjoin(WorkspaceGrant, WorkspaceGrant.user_id == Token.owner_id)
        .where(TokenSecret.secret_hash == secret_hash)
        .execution_options(populate_existing=False)
    ).all()
    if not rows:
        return None
    retires_at, token, account, owner, _ = rows[0]
    grants = {row[4].workspace_id: frozenset(row[4].scopes) for row in rows if row[4]}
    scopes, workspaces = _effective_access(token, owner, grants)
    return TokenRecord(
        token_id=token.id, account_id=account.id, account_slug=account.slug,
        account_name=account.name, region=token.region, kind=token.kind, name=token.name,
        prefix=token.prefix, workspace_id=token.workspace_id, expires_at=token.expires_at,
        revoked_at=token.revoked_at, secret_retires_at=retires_at,
        token_networks=_networks(token.ip_allowlist),
        account_networks=_networks(account.ip_allowlist),
        scopes=scopes, token_scopes=frozenset(token.scopes), workspaces=workspaces,
        owner_id=owner.id if owner else None, owner_email=owner.email if owner else None,
        owner_active=owner.active if owner else True,
    )


def _effective_access(token: Token, owner: User | None,
                      grants: dict[str, frozenset[str]]) -> tuple[frozenset[str],
                                                                  frozenset[str] | None]:
    own = frozenset(token.scopes)
    pinned = frozenset({token.workspace_id}) if token.workspace_id else None
    if token.kind == APPLICATION or owner is None:
        return own, pinned
    permissions = Permissions(owner.role, owner.active, grants)
    scopes = own & permissions.scopes_in(token.workspace_id)
    if permissions.is_admin:
        return scopes, pinned
    visible = frozenset(grants)
    return scopes, (visible & pinned if pinned is not None else visible)


def _networks(entries: list[str]) -> tuple[IpNetwork, ...]:
    return tuple(ipaddress.ip_network(entry) for entry in entries)
