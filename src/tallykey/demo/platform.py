"""The demo platform API (`/core/v3`), protected by tallykey: what an integration calls.

`GET /core/v3/info` verifies the token and says whose it is; `GET /core/v3/employees`
shows the employees of the workspaces where the token may read them (a personal token:
where its owner holds `employees:read`), or of one workspace (`?workspace=` or the
`Tallykey-Workspace` header); `POST /core/v3/employees` needs `employees:write` in the
workspace it writes to. Permissions are checked per workspace, never flattened (SPEC
§11). Honours the `Timezone` header and answers in XML when asked with
`Accept: application/xml`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from defusedxml import ElementTree as SafeElementTree
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from tallykey.accounts.models import Account, Workspace
from tallykey.accounts.service import normalise_email
from tallykey.api.responses import error_responses, wants_xml, xml_response
from tallykey.auth.caller import TallykeyRefused, verify_scope
from tallykey.auth.verdict import Verdict
from tallykey.demo.models import Employee
from tallykey.errors import (
    InsufficientScope,
    InvalidTimezone,
    NotFound,
    UnsupportedMediaType,
    ValidationFailed,
)
from tallykey.runtime import Runtime
from tallykey.tokens.policy import clean_name
from tallykey.web.deps import runtime_of

router = APIRouter(prefix="/core/v3", tags=["demo platform"],
                   responses=error_responses(400, 401, 403, 404, 413, 415, 422, 429, 503))
MAX_BODY = 64 * 1024


def requested_workspace(request: Request) -> str | None:
    """The workspace a request names: `Tallykey-Workspace` header or `?workspace=`."""
    return (request.headers.get("tallykey-workspace")
            or request.query_params.get("workspace") or None)


def platform_token(*scopes: str, per_workspace: bool = True) -> Any:
    """The verified token; with `per_workspace`, the scopes must be held in the workspace
    the request names (when it names one)."""
    async def dependency(request: Request) -> Verdict:
        workspace = requested_workspace(request) if per_workspace else None
        verdict = await verify_scope(request.app.state.verifier, request.scope, scopes,
                                     runtime_of(request).settings.trusted_proxy_networks,
                                     workspace)
        if not verdict.allowed:
            raise TallykeyRefused(verdict)
        return verdict

    return Depends(dependency)


def requested_zone(request: Request) -> ZoneInfo | None:
    name = request.headers.get("timezone")
    if name is None:
        return None
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidTimezone(
            f"Unknown time zone {name!r} in the Timezone header.",
            "Use an IANA time zone name such as Europe/Berlin or America/New_York.") from None


Zone = Annotated[ZoneInfo | None, Depends(requested_zone)]


def render(request: Request, root: str, payload: Any, status: int = 200,
           headers: Mapping[str, str] | None = None) -> Response:
    if wants_xml(request):
        return xml_response(root, payload, status, headers)
    return JSONResponse(payload, status_code=status, headers=dict(headers or {}))


def _moment(value: datetime, zone: ZoneInfo | None, fallback: str) -> str:
    return value.astimezone(zone or ZoneInfo(fallback)).isoformat()


@router.get("/info")
async def info(request: Request, zone: Zone,
               verdict: Verdict = platform_token()) -> Response:
    """Who the token belongs to and what it may do: the integration's connection check."""
    runtime = runtime_of(request)
    account = await run_in_threadpool(_account, runtime, verdict)
    assert verdict.expires_at is not None
    payload = {
        "account": {"id": account.id, "slug": account.slug, "name": account.name,
                    "region": account.region},
        "token": {"id": verdict.token_id, "kind": verdict.kind,
                  "scopes": sorted(verdict.scopes),
                  "expires_at": _moment(verdict.expires_at, zone, "UTC")},
        "user": {"id": verdict.owner_id, "email": verdict.owner_email}
        if verdict.owner_id else None,
    }
    return render(request, "info", payload, headers=verdict.headers())


def _account(runtime: Runtime, verdict: Verdict) -> Account:
    with runtime.database.reading() as session:
        return session.get_one(Account, verdict.account_id)


@router.get("/employees")
async def list_employees(request: Request, zone: Zone,
                         verdict: Verdict = platform_token()) -> Response:
    """Employees of the workspace the request names, or of every workspace where the
    token may read them."""
    readable = [ws for ws, held in verdict.workspaces.items() if "employees:read" in held]
    if verdict.workspace is not None:
        readable = [verdict.workspace] if verdict.workspace in readable else []
    if not readable:
        raise InsufficientScope(
            "employees:read", "The token may not read employees"
            + (" in this workspace." if verdict.workspace else " in any workspace."),
            "Use a token whose owner holds employees:read in the workspace.")
    verdict = replace(verdict, workspaces={ws: verdict.workspaces[ws] for ws in readable})
    runtime = runtime_of(request)
    rows = await run_in_threadpool(_visible_employees, runtime, verdict)
    payload = {"employees": [_employee(e, ws, zone) for e, ws in rows], "count": len(rows)}
    return render(request, "result", payload, headers=verdict.headers())


def _visible_employees(runtime: Runtime, verdict: Verdict) -> list[tuple[Employee, Workspace]]:
    statement = (select(Employee, Workspace).join(Workspace, Workspace.id == Employee.workspace_id)
                 .where(Employee.account_id == verdict.account_id))
    statement = statement.where(Employee.workspace_id.in_(sorted(verdict.workspaces)))
    with runtime.database.reading() as session:
        return [(row[0], row[1]) for row in session.execute(
            statement.order_by(Employee.name, Employee.id))]


def _employee(employee: Employee, workspace: Workspace, zone: ZoneInfo | None
              ) -> dict[str, Any]:
    return {"id": employee.id, "name": employee.name, "email": employee.email,
            "job_title": employee.job_title, "workspace": workspace.slug,
            "created_at": _moment(employee.created_at, zone, workspace.timezone)}


class EmployeeIn(BaseModel):
    name: str = Field(max_length=1000)
    email: str = Field(max_length=254)
    job_title: str = Field(default="", max_length=200)
    workspace: str = Field(max_length=64)


#: The body is read by hand (JSON or XML), so its schema is declared here for the docs.
EMPLOYEE_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": EmployeeIn.model_json_schema()}}}}


@router.post("/employees", status_code=201, openapi_extra=EMPLOYEE_BODY)
async def create_employee(request: Request, zone: Zone,
                          verdict: Verdict = platform_token(per_workspace=False)
                          ) -> Response:
    """Create an employee in a workspace the token can see and write to (JSON or XML)."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ValidationFailed(f"The body is larger than {MAX_BODY} bytes.")
    data = _parse_body(request.headers.get("content-type", ""), raw)
    try:
        body = EmployeeIn.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ValidationFailed(f"{field}: {first['msg']}", field=field) from None
    runtime = runtime_of(request)
    employee, workspace = await run_in_threadpool(_create_employee, runtime, verdict, body)
    return render(request, "employee", _employee(employee, workspace, zone), 201,
                  headers=verdict.headers())


def _parse_body(content_type: str, raw: bytes) -> Any:
    media = content_type.split(";")[0].strip().lower()
    try:
        if media == "application/xml" or media == "text/xml":
            root = SafeElementTree.fromstring(raw)
            return {child.tag: (child.text or "") for child in root}
        if media == "application/json":
            return json.loads(raw)
    except (ValueError, SafeElementTree.ParseError) as error:
        raise ValidationFailed(f"The {media} body cannot be parsed: {error}") from None
    except Exception as error:  # defusedxml refuses entities, DTDs and the like
        raise ValidationFailed(f"The XML body was refused: {error.__class__.__name__}."
                               ) from None
    raise UnsupportedMediaType(
        f"Content-Type {content_type or '(none)'!r} is not supported.",
        "Send Content-Type: application/json or application/xml.")


def _create_employee(runtime: Runtime, verdict: Verdict, body: EmployeeIn
                     ) -> tuple[Employee, Workspace]:
    name = clean_name(body.name, "name")
    email = normalise_email(body.email)
    with runtime.database.transaction() as session:
        workspace = session.scalar(select(Workspace).where(
            Workspace.account_id == verdict.account_id,
            (Workspace.slug == body.workspace) | (Workspace.id == body.workspace)))
        if workspace is None or workspace.id not in verdict.workspaces:
            raise NotFound(f"No workspace {body.workspace!r} visible to this token.",
                           field="workspace")
        if "employees:write" not in verdict.scopes_in(workspace.id):
            raise InsufficientScope("employees:write", "The token may not write in "
                                    f"workspace {workspace.slug!r}.",
                                    "Use a token whose owner holds employees:write there.")
        employee = Employee(account_id=verdict.account_id, workspace_id=workspace.id,
                            name=name, email=email, job_title=body.job_title.strip(),
                            created_at=runtime.clock.now())
        session.add(employee)
        session.flush()
        return employee, workspace

