"""The audit log over the management API: `GET /api/v1/audit`, filtered and paged."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from tallykey.api.deps import ManagementActor, RuntimeDep
from tallykey.api.responses import error_responses
from tallykey.api.schemas import (
    AuditList,
    AuditView,
    parse_moment,
)
from tallykey.audit import query as audit_query
from tallykey.errors import (
    PermissionDenied,
)

router = APIRouter(prefix="/api/v1",
                   responses=error_responses(400, 401, 403, 404, 409, 413, 422, 429, 503))


@router.get("/audit", response_model=AuditList, tags=["audit"])
def list_audit(
    actor: ManagementActor,
    runtime: RuntimeDep,
    action: str | None = None,
    target_id: str | None = None,
    actor_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**31 - 1,  # audit ids are 32-bit
                                        description="cursor: entries older than this id")]
    = None,
) -> AuditList:
    """The account's audit trail, newest first. Administrators and auditors only."""
    if not actor.reads_all:
        raise PermissionDenied("Only administrators and auditors can read the audit log.")
    bounds = {name: parse_moment(value, name) if value else None
              for name, value in (("since", since), ("until", until))}
    items, cursor = audit_query.page(runtime.database, audit_query.AuditQuery(
        actor.account_id, action=action, target_id=target_id, actor_id=actor_id,
        since=audit_query.start_of(bounds["since"]) if bounds["since"] else None,
        until=audit_query.end_of(bounds["until"]) if bounds["until"] else None),
        before, limit)
    return AuditList(items=[AuditView.of(e) for e in items], next_cursor=cursor)
