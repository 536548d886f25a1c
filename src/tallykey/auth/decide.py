"""The verification decision: whether a token passes for one request, or why not.

Plain functions of a `TokenRecord` (a snapshot of the token, its owner and its account)
and the request's facts (client IP, required scopes, workspace, the time): nothing here
reads the database, the change feed or the network, counts usage or keeps state. The
verifier (`auth.verifier`) finds the record, calls these, and does what follows a verdict
(usage counts, the throttle, rate limits and credits).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING

from tallykey.errors import (
    AccountSuspended,
    AuthenticationError,
    ExpiredToken,
    InsufficientScope,
    IpNotAllowed,
    OwnerInactive,
    RevokedToken,
    RotatedOut,
    TokenPending,
    TokenSuspended,
    UnknownToken,
    WorkspaceArchived,
    WorkspaceNotAllowed,
    WrongRegion,
)

if TYPE_CHECKING:
    from tallykey.auth.record import TokenRecord
    from tallykey.auth.verdict import Verdict

#: What `refusal` and `decide` say of a decoy (SPEC §17): the verifier answers it as an
#: unknown token, and counts it only as a trip.
DECOY = UnknownToken("A decoy token.")


def decide(record: TokenRecord, allowed: Verdict, now: float, client_ip: str,
           required_scopes: Iterable[str] = (), workspace: str | None = None
           ) -> Verdict | AuthenticationError:
    """The answer for one request at POSIX time `now`: `allowed` (the record's ready-made
    allowed verdict, as it answers for `workspace` when the request names one, by id or
    slug) when the token passes, else why it does not (`refusal`; `DECOY` for a decoy).

    Rate limits and credits are not decided here: an allowed verdict of a token that has
    them (`record.controlled`) still needs their admission (`auth.controls`)."""
    workspace_id = None if workspace is None else record.workspace_of(workspace)
    held = record.scopes if workspace is None else record.workspaces.get(workspace_id or "")
    # The common case first: only expiry and scopes can refuse a plain record.
    if not (record.plain and now < record.expires_ts and held is not None
            and held.issuperset(required_scopes)):
        error = refusal(record, now, client_ip, required_scopes, workspace)
        if error is not None:
            return error
    return allowed if workspace_id is None else allowed.for_workspace(workspace_id)


def refusal(record: TokenRecord, now: float, client_ip: str,
            required_scopes: Iterable[str] = (), workspace: str | None = None
            ) -> AuthenticationError | None:
    """Why the record does not pass at POSIX time `now`, or None. Order: SPEC §3. A
    decoy never passes (`DECOY`)."""
    if record.decoy:
        return DECOY
    if record.revoked_at is not None:
        return RevokedToken(record.revoked_at)
    if record.pending_at is not None:
        return TokenPending(record.pending_at)
    if record.suspended_at is not None:
        assert record.suspended_by is not None
        return TokenSuspended(record.suspended_at, record.suspended_by)
    if not record.account_active:
        return AccountSuspended("The account this token belongs to is suspended.",
                                "Ask the platform's support to reactivate the account.")
    if record.workspace_archived:
        return WorkspaceArchived("The workspace this token belongs to was archived, so the "
                                 "token no longer works.", "Create a token for a workspace "
                                 "that is in use.")
    if record.expires_ts <= now:
        return ExpiredToken(record.expires_at)
    if record.retires_ts is not None and record.retires_ts <= now:
        assert record.secret_retires_at is not None
        return RotatedOut(record.secret_retires_at, renewed=record.renewed)
    if not record.owner_active:
        return OwnerInactive("The token's owner is no longer active, so the token no longer "
                             "works.", "Ask an administrator for a token of an active user.")
    if (record.token_networks or record.account_networks) and not ip_allowed(record,
                                                                              client_ip):
        return IpNotAllowed(
            f"Requests from {client_ip or 'an unknown address'} are not allowed for this "
            "token.", "Call from an address in the token's IP allow-list, or ask an "
            "administrator to add this one.", ip=client_ip)
    if workspace is not None:
        return workspace_refusal(record, workspace, required_scopes)
    for scope in required_scopes:
        if scope not in record.scopes:
            slugs = sorted(slug for slug, ws in record.workspace_slugs.items()
                           if scope in record.workspaces.get(ws, ()))
            if slugs:
                return InsufficientScope(
                    scope, f"The token holds {scope!r} only in some workspaces "
                    f"({', '.join(slugs)}), and this request names none.",
                    "Name the workspace: send the Tallykey-Workspace header (or "
                    "?workspace=) with its id or slug.", workspaces=slugs)
            if scope in record.token_scopes:
                return InsufficientScope(scope, f"The token's owner does not hold the "
                                         f"permission {scope!r} (any more), so the token "
                                         "cannot use it.")
            return InsufficientScope(scope)
    return None


def workspace_refusal(record: TokenRecord, workspace: str,
                      required_scopes: Iterable[str]) -> AuthenticationError | None:
    """Why the record does not pass for one workspace (an id or slug), or None."""
    workspace_id = record.workspace_of(workspace)
    if workspace_id is None:
        return WorkspaceNotAllowed(
            f"The token has no access to workspace {workspace[:64]!r}.",
            "Use a token of a user who may work in that workspace, or one made for it.",
            workspace=workspace[:64])
    held = record.workspaces[workspace_id]
    for scope in required_scopes:
        if scope not in held:
            if scope in record.token_scopes:
                return InsufficientScope(
                    scope, f"The token's owner does not hold {scope!r} in workspace "
                    f"{workspace[:64]!r}, so the token cannot use it there.",
                    "Ask an administrator for that permission in this workspace.",
                    workspace=workspace[:64])
            return InsufficientScope(scope, f"This request needs the scope {scope!r}, which "
                                     "the token does not grant.", workspace=workspace[:64])
    return None


def ip_allowed(record: TokenRecord, client_ip: str) -> bool:
    """Whether `client_ip` is in the token's and the account's allow-lists (an address
    that does not parse is in neither)."""
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    return record.allows_ip(address)


def unknown_token(region: str) -> UnknownToken:
    """The refusal of a token the store does not hold (a decoy answers the same)."""
    return UnknownToken(
        "The token is not recognised.",
        f"Check that it has not been deleted and that it was issued by this region "
        f"({region}); copy it again from the console.")


def wrong_region(region: str, here: str, base_url: str | None) -> WrongRegion:
    """The refusal of a token of `region` presented in region `here`; `base_url` is that
    region's API base URL, when configured."""
    where = (f"its API base URL is {base_url}" if base_url
             else f"use the {region} API base URL")
    return WrongRegion(
        f"This token belongs to region {region!r}, not to this region ({here!r}).",
        f"Send requests for this token to region {region}: {where}.",
        region=region, **({"base_url": base_url} if base_url else {}))
