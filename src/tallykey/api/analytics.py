"""Usage analytics over the API (SPEC §16): `GET /api/v1/analytics/verifications`, as JSON
or, with `Accept: text/csv`, as CSV. A thin adapter over `tallykey.monitor.analytics`:
administrators and auditors read the whole account's usage, a member that of their own
tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from tallykey.actor import Actor
from tallykey.api.deps import ManagementActor, RuntimeDep
from tallykey.api.responses import error_responses
from tallykey.monitor import analytics
from tallykey.monitor.analytics import Series, Window
from tallykey.runtime import Runtime
from tallykey.tokens.schemas import Timestamp

router = APIRouter(prefix="/api/v1", tags=["analytics"],
                   responses=error_responses(401, 403, 404, 422, 503))

CSV_TYPE = "text/csv"


class BucketView(BaseModel):
    start: Timestamp = Field(description="the hour or UTC day the counts are of")
    allowed: int
    refused: int
    by_reason: dict[str, int] = Field(description="refused requests by reason "
                                      "(`revoked`, `rate_limited`, …)")


class SeriesView(BaseModel):
    key: str | None = Field(description="the token, identity or workspace id, or the "
                            "outcome (`allowed` or a refusal reason); null: tokens in no "
                            "identity or workspace")
    label: str | None = Field(description="the token's name, the identity's external "
                              "id, the workspace's slug, or the outcome")
    allowed: int = Field(description="all the series' buckets together")
    refused: int
    buckets: list[BucketView] = Field(description="oldest first; hours or days without "
                                      "a request are left out")

    @classmethod
    def of(cls, series: Series) -> SeriesView:
        return cls(key=series.key, label=series.label, allowed=series.allowed,
                   refused=series.refused,
                   buckets=[BucketView(start=b.start, allowed=b.allowed, refused=b.refused,
                                       by_reason=dict(sorted(b.by_reason.items())))
                            for b in series.buckets])


class VerificationAnalytics(BaseModel):
    since: Timestamp = Field(description="the window's start, rounded down to its bucket")
    until: Timestamp = Field(description="the window's end (exclusive), rounded up")
    interval: str
    group_by: str
    retention_days: int = Field(description="usage older than this is no longer kept")
    series: list[SeriesView] = Field(description="one per key with at least one "
                                     "request, the busiest first")

    @classmethod
    def of(cls, query: Window, found: list[Series], retention_days: int
           ) -> VerificationAnalytics:
        """The answer (the API's, and the CLI's `--json`)."""
        return cls(since=query.since, until=query.until, interval=query.interval,
                   group_by=query.group_by, retention_days=retention_days,
                   series=[SeriesView.of(s) for s in found])


@router.get("/analytics/verifications", response_model=VerificationAnalytics,
            responses={200: {"content": {CSV_TYPE: {"schema": {"type": "string"}}},
                             "description": "JSON, or CSV with `Accept: text/csv`: one "
                             "row per key and bucket, columns `group_by, key, label, "
                             "start, allowed, refused` then `refused_<reason>` for each "
                             "reason in the answer"}})
def verifications(
    request: Request,
    actor: ManagementActor,
    runtime: RuntimeDep,
    since: Annotated[str | None, Query(max_length=40, description=(
        "ISO 8601 date or date-time (naive: UTC); default: 48 hours or 30 days before "
        "`until`"))] = None,
    until: Annotated[str | None, Query(max_length=40, description=(
        "exclusive; a date includes its whole day; default: now (the current hour or "
        "day included)"))] = None,
    interval: Annotated[str | None, Query(max_length=40, description=(
        "`hour` (at most 31 days) or `day` (at most 400 days; the default)"))] = None,
    group_by: Annotated[str | None, Query(max_length=40, description=(
        "`token` (the default), `identity`, `outcome` or `workspace`"))] = None,
    token: Annotated[str | None, Query(max_length=100, description=(
        "only this token (its id)"))] = None,
    identity: Annotated[str | None, Query(max_length=255, description=(
        "only this identity's tokens (its id or external id)"))] = None,
    workspace: Annotated[str | None, Query(max_length=100, description=(
        "only this workspace's tokens (its id or slug)"))] = None,
) -> Response | VerificationAnalytics:
    """Verifications per hour or per UTC day, allowed and refused by reason, grouped by
    token, identity, workspace or outcome, of the tokens the caller sees (administrators
    and auditors: the account's; a member: their own). Counts are written by every node
    about once a second and kept `TALLYKEY_USAGE_RETENTION_DAYS` days. Bad parameters
    answer 422 with `field` and `reason` (`invalid_interval`, `invalid_group_by`,
    `invalid_time`, `invalid_range`, `range_too_long`)."""
    query = analytics.window(runtime.clock.now(), since=since, until=until,
                             interval=interval, group_by=group_by)
    query = Window(query.since, query.until, query.interval, query.group_by,
                   token_id=runtime.tokens.get(actor, token).id if token else None,
                   identity_id=runtime.identities.get(actor, identity).id if identity
                   else None,
                   workspace_id=_workspace(runtime, actor, workspace))
    with runtime.database.reading() as session:
        found = analytics.verifications(session, actor, query)
    if _wants_csv(request):
        return StreamingResponse(
            analytics.csv_lines(query, found), media_type=f"{CSV_TYPE}; charset=utf-8",
            headers={"Content-Disposition":
                     'attachment; filename="tallykey-verifications.csv"'})
    return VerificationAnalytics.of(query, found, runtime.settings.usage_retention_days)


def _workspace(runtime: Runtime, actor: Actor, ref: str | None) -> str | None:
    if not ref:
        return None
    with runtime.database.reading() as session:
        return analytics.resolve_workspace(session, actor, ref)


def _wants_csv(request: Request) -> bool:
    """CSV when the client asks for it before JSON (`Accept: text/csv`)."""
    accept = request.headers.get("accept", "").lower()
    for part in accept.split(","):
        kind = part.split(";")[0].strip()
        if kind == CSV_TYPE:
            return True
        if kind in ("application/json", "*/*", "application/*"):
            return False
    return False
