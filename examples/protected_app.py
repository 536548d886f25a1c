"""A small app of its own, protected by tallykey in-process (no network hop).

Run it next to a tallykey store (same TALLYKEY_DATABASE_URL or TALLYKEY_DATA_DIR):

    .venv/bin/uvicorn examples.protected_app:app --port 9000
    curl -H "Authorization: Bearer tlk_eu1_…" http://127.0.0.1:9000/reports

Every route behind the middleware needs a valid token; `/reports/export` also needs
`employees:write`, checked per route by the FastAPI dependency.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from tallykey import TallykeyAuth, TallykeyMiddleware, Verdict, Verifier

verifier = Verifier()


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    verifier.close()  # writes the last usage counts


reports = FastAPI(title="reports (protected by tallykey)", lifespan=lifespan)


@reports.get("/reports")
def list_reports(request: Request) -> dict[str, object]:
    verdict: Verdict = request.state.tallykey
    return {"account": verdict.account, "token": verdict.token_id,
            "scopes": sorted(verdict.scopes), "reports": ["weekly", "monthly"]}


@reports.post("/reports/export")
def export_reports(
    verdict: Annotated[Verdict, Depends(TallykeyAuth(verifier, ["employees:write"]))],
) -> dict[str, str]:
    return {"export": "started", "by_token": verdict.token_id or ""}


app = TallykeyMiddleware(reports, verifier=verifier, required_scopes=["employees:read"])
