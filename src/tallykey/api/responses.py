"""The one place where errors become HTTP responses (JSON, RFC 6750 challenges)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from tallykey.auth.verdict import Verdict
from tallykey.errors import AuthenticationError, TallykeyError

log = logging.getLogger(__name__)


class VerdictRefused(Exception):
    """Raised by request dependencies when a presented token does not pass."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.message)
        self.verdict = verdict


def verdict_response(verdict: Verdict) -> JSONResponse:
    return JSONResponse(verdict.body(), status_code=verdict.status, headers=verdict.headers())


def error_response(error: TallykeyError) -> JSONResponse:
    if isinstance(error, AuthenticationError):
        return verdict_response(Verdict.refused(error))
    return JSONResponse(error.as_dict(), status_code=error.status)


def _describe(errors: list[Any]) -> tuple[str, list[dict[str, str]]]:
    described = []
    for item in errors:
        location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        described.append({"field": location or "body", "message": str(item.get("msg", ""))})
    first = described[0] if described else {"field": "body", "message": "invalid"}
    return f"{first['field']}: {first['message']}", described


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TallykeyError)
    async def _product_error(_: Request, error: TallykeyError) -> Response:
        return error_response(error)

    @app.exception_handler(VerdictRefused)
    async def _refused(_: Request, error: VerdictRefused) -> Response:
        return verdict_response(error.verdict)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> Response:
        message, details = _describe(list(error.errors()))
        return JSONResponse({"error": "validation_failed", "message": message,
                             "hint": "Fix the field named and send the request again.",
                             "errors": details}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            error.status_code, "http_error")
        return JSONResponse({"error": code, "message": str(error.detail)},
                            status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> Response:
        log.exception("unhandled error")
        return JSONResponse({"error": "internal_error",
                             "message": "Something went wrong on our side; it has been logged."},
                            status_code=500)
