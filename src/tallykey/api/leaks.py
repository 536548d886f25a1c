"""`POST /api/v1/leaks`: secret-scanning reports (GitHub's partner format), signed by the
reporter. The signature is checked over the raw body before anything is parsed; nothing is
revoked unless the signature and the whole payload are valid."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from tallykey.api.responses import error_responses, show_propagation
from tallykey.errors import ReportTooLarge, ValidationFailed
from tallykey.leaks.reports import REVOKED, LeakReports, ReportedToken
from tallykey.leaks.signatures import IDENTIFIER_HEADER, SIGNATURE_HEADER, KeySource
from tallykey.web.bounds import MAX_BODY_BYTES
from tallykey.web.deps import ip_of, runtime_of

router = APIRouter(prefix="/api/v1", tags=["leak reports"],
                   responses=error_responses(400, 401, 413, 422, 503))

#: The body limit (`RequestBounds` refuses more before we get here) and entries per report.
MAX_REPORT_BYTES = MAX_BODY_BYTES
MAX_REPORT_ENTRIES = 1000
_key_sources: dict[str, KeySource] = {}


class ReportEntry(BaseModel):
    """One reported match, as GitHub sends it; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    token: str = Field(min_length=1, max_length=4096)
    type: str = Field(min_length=1, max_length=200)
    url: str = Field(default="", max_length=4096)
    source: str = Field(default="", max_length=200)


class LeakLabel(BaseModel):
    token_raw: str
    token_type: str
    label: str = Field(description="true_positive or false_positive")


_REPORT = TypeAdapter(list[ReportEntry])


@router.post("/leaks", response_model=list[LeakLabel])
async def report_leaks(request: Request, response: Response) -> list[dict[str, str]]:
    """Revoke every live token in a signed secret-scanning report and label each entry
    `true_positive` (a real token of ours) or `false_positive`, in the partner format."""
    runtime = runtime_of(request)
    raw = await request.body()
    if len(raw) > MAX_REPORT_BYTES:
        raise ReportTooLarge(f"The report is larger than {MAX_REPORT_BYTES} bytes.",
                             "Send fewer tokens per report.")
    setting = runtime.settings.leak_report_keys
    source = _key_sources.setdefault(setting, KeySource(setting))
    ring = await run_in_threadpool(source.current)
    reporter = ring.verify(request.headers.get(IDENTIFIER_HEADER),
                           request.headers.get(SIGNATURE_HEADER), raw)
    reports = _parse(raw)
    labels = await run_in_threadpool(LeakReports(runtime).process, reports,
                                     reporter=reporter, reporter_ip=ip_of(request))
    revoked = [label.token_id for label in labels if label.outcome == REVOKED]
    if revoked and revoked[-1]:
        # the newest change covers the earlier ones: answer once every node refuses them all
        show_propagation(response, await run_in_threadpool(runtime.propagation.settle,
                                                           revoked[-1]))
    return [label.as_partner() for label in labels]


def _parse(raw: bytes) -> list[ReportedToken]:
    try:
        entries = _REPORT.validate_json(raw)
    except ValidationError as error:
        first: dict[str, Any] = dict(error.errors()[0])
        where = ".".join(str(part) for part in first.get("loc", ())) or "body"
        raise ValidationFailed(
            f"The report is not a JSON list of {{token, type, url, source}}: {where}: "
            f"{first.get('msg', 'invalid')}.", "Nothing was revoked; fix the report and "
            "send it again.", field=where) from None
    if len(entries) > MAX_REPORT_ENTRIES:
        raise ReportTooLarge(f"The report has {len(entries)} entries; at most "
                             f"{MAX_REPORT_ENTRIES} are accepted at once.",
                             "Split it into several reports.")
    return [ReportedToken(e.token, e.type, e.url, e.source) for e in entries]
