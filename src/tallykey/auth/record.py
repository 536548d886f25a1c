"""What verification needs to know about a token (loaded by `auth.lookup`, cached).

A `TokenRecord` is an immutable snapshot of the token, the secret that matched, the
owner's current permissions and the account's policy: every verdict is computed from it
without touching the database.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tallykey.controls.rules import RateRule, Refill
from tallykey.tokens.models import DECOY

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
    #: Scopes that pass when a request names no workspace: held in every workspace the
    #: token sees (a pinned token: its workspace), plus admin-only account scopes.
    scopes: frozenset[str]
    token_scopes: frozenset[str]
    #: Per live workspace the token sees: its effective scopes there (SPEC §11). A scope
    #: held in one workspace never passes for another.
    workspaces: Mapping[str, frozenset[str]]
    owner_id: str | None
    owner_email: str | None
    owner_active: bool
    #: Slugs of the workspaces in `workspaces`, so a request may name one either way.
    workspace_slugs: Mapping[str, str] = field(default_factory=dict)
    #: The token is pinned to a workspace that was archived: it stopped with it.
    workspace_archived: bool = False
    account_active: bool = True
    #: Key controls (SPEC §13): rate limits, whether it spends credits (and their refill),
    #: metadata and external id, returned with every verdict.
    rate_rules: tuple[RateRule, ...] = ()
    has_credits: bool = False
    refill: Refill | None = None
    metadata: Mapping[str, Any] | None = None
    external_id: str | None = None
    #: The token's name, returned with every verdict (`POST /api/v1/verify`).
    name: str = ""
    #: A suspended token is refused until resumed, naming who suspended it and when.
    suspended_at: datetime | None = None
    suspended_by: str | None = None
    #: Awaiting an administrator's approval since then (refused until approved).
    pending_at: datetime | None = None
    #: The token was renewed: its secrets retire, and its successor takes over.
    renewed: bool = False
    #: The first token of its renewal chain (itself if it renews none): a token's own
    #: rate-limit windows are counted per chain, so a renewal never restarts them.
    lineage_id: str | None = None
    #: The identity the token belongs to (SPEC §16): `{id, external_id, metadata}` as the
    #: verdict carries it, and whether its credit pool is spent (and its refill). Its rate
    #: limits are in `rate_rules` (shared `identity`).
    identity: Mapping[str, Any] | None = None
    identity_id: str | None = None
    identity_has_credits: bool = False
    identity_refill: Refill | None = None
    #: The plan that applies (SPEC §16; its limits and ceiling are already in
    #: `rate_rules` and the scopes), and its refill when the token spends plan credits
    #: (it has no credits of its own).
    plan_id: str | None = None
    plan_refill: Refill | None = None

    #: `expires_at` and `secret_retires_at` as POSIX seconds, for the hot path.
    expires_ts: float = field(init=False)
    retires_ts: float | None = field(init=False)
    #: True when only expiry and scopes can refuse it (the common case, checked first).
    plain: bool = field(init=False)
    #: True when a rate limit or credits must admit each request (`auth.controls`).
    controlled: bool = field(init=False)
    #: True when a request spends credits: the token's own (or its plan's), its
    #: identity's, or both.
    spends: bool = field(init=False)
    #: A decoy (SPEC §17): never passes; it answers as an unknown token would.
    decoy: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "decoy", self.kind == DECOY)
        object.__setattr__(self, "expires_ts", self.expires_at.timestamp())
        object.__setattr__(self, "retires_ts", self.secret_retires_at.timestamp()
                           if self.secret_retires_at is not None else None)
        object.__setattr__(self, "plain", self.revoked_at is None
                           and self.secret_retires_at is None and self.owner_active
                           and not self.token_networks and not self.account_networks
                           and self.account_active and not self.workspace_archived
                           and self.suspended_at is None and self.pending_at is None
                           and not self.decoy)
        object.__setattr__(self, "spends", self.has_credits or self.identity_has_credits
                           or self.plan_refill is not None)
        object.__setattr__(self, "controlled", bool(self.rate_rules) or self.spends)

    def allows_ip(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        for networks in (self.token_networks, self.account_networks):
            if networks and not any(address in network for network in networks):
                return False
        return True

    def workspace_of(self, ref: str) -> str | None:
        """The id of the workspace `ref` (an id or a slug) names, if the token sees it."""
        if ref in self.workspaces:
            return ref
        return self.workspace_slugs.get(ref)


def networks(entries: list[str]) -> tuple[IpNetwork, ...]:
    return tuple(ipaddress.ip_network(entry) for entry in entries)
