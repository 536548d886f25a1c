"""What verification needs to know about a token (loaded by `auth.lookup`, cached).

A `TokenRecord` is an immutable snapshot of the token, the secret that matched, the
owner's current permissions and the account's policy: every verdict is computed from it
without touching the database.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class TokenRecord:
    token_id: str
    account_id: str
    account_slug: str
    kind: str
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

    #: `expires_at` and `secret_retires_at` as POSIX seconds, for the hot path.
    expires_ts: float = field(init=False)
    retires_ts: float | None = field(init=False)
    #: True when only expiry and scopes can refuse it (the common case, checked first).
    plain: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "expires_ts", self.expires_at.timestamp())
        object.__setattr__(self, "retires_ts", self.secret_retires_at.timestamp()
                           if self.secret_retires_at is not None else None)
        object.__setattr__(self, "plain", self.revoked_at is None
                           and self.secret_retires_at is None and self.owner_active
                           and not self.token_networks and not self.account_networks)

    def allows_ip(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        for networks in (self.token_networks, self.account_networks):
            if networks and not any(address in network for network in networks):
                return False
        return True


def networks(entries: list[str]) -> tuple[IpNetwork, ...]:
    return tuple(ipaddress.ip_network(entry) for entry in entries)
