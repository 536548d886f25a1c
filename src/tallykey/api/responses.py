"""How answers are rendered: the one place where errors become HTTP responses (JSON,
RFC 6750 challenges), and how far a change reached the nodes (`show_propagation`)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from xml.etree import ElementTree

import fastapi.routing
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from tallykey.api.schemas import ErrorBody
from tallykey.auth.caller import RefusalResponse, TallykeyRefused
from tallykey.auth.verdict import Verdict
from tallykey.db.engine import store_outage
from tallykey.errors import AuthenticationError, TallykeyError, error_body, mask_secrets
from tallykey.feed.nodes import Propagation
from tallykey.feed.propagation import PropagationView

log = logging.getLogger(__name__)

#: What each error status means, for the OpenAPI document.
ERROR_STATUSES: dict[int, str] = {
    400: "Malformed request: an Authorization header or a body that cannot be parsed",
    401: "No credentials, or credentials that were refused (RFC 6750 challenge)",
    403: "Authenticated but not allowed (scope, role, IP allow-list, CSRF)",
    404: "No such object in this account (or it is not visible to the caller)",
    409: "The object's state does not allow this (e.g. already revoked)",
    413: "The request body is too large",
    415: "The body's Content-Type is not supported",
    422: "A field was rejected; `field` names it and the message says why",
    429: "Too many failed attempts from this address, or the token's rate limit or usage "
         "credits are used up (`rate_limited`, `usage_exhausted`); see Retry-After",
    503: "The token store cannot be reached (`store_unavailable`, with Retry-After), or "
         "not available on this deployment as configured (e.g. no leak-report keys)",
}
_CHALLENGE = {"WWW-Authenticate": {"description": "RFC 6750 Bearer challenge",
                                   "schema": {"type": "string"}}}
_RETRY = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a router or route: the JSON error body under each status."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorBody, "description": ERROR_STATUSES[status]}
        if status == 401:
            entry["headers"] = _CHALLENGE
        elif status in (429, 503):
            entry["headers"] = _RETRY
        documented[status] = entry
    return documented


#: The platform API answers in XML when asked (`Accept: application/xml`), errors too.
PLATFORM_PREFIX = "/core/"


def wants_xml(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/xml" in accept and "application/json" not in accept


def xml_element(tag: str, value: Any) -> ElementTree.Element:
    """A JSON-like value as XML: objects become child elements, lists repeat a child
    named after the singular of `tag` (or `item`), booleans are `true`/`false`."""
    element = ElementTree.Element(tag)
    if isinstance(value, Mapping):
        for key, item in value.items():
            element.append(xml_element(key, item))
    elif isinstance(value, list | tuple):
        child_tag = tag[:-1] if tag.endswith("s") else "item"
        for item in value:
            element.append(xml_element(child_tag, item))
    elif value is not None:
        element.text = _XML_INVALID.sub(
            "\ufffd", str(value).lower() if isinstance(value, bool) else str(value))
    return element


#: Characters XML 1.0 cannot carry at all (control characters, lone surrogates): shown
#: as U+FFFD, so stored text never makes a document no parser accepts.
_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_response(root: str, payload: Any, status: int,
                 headers: Mapping[str, str] | None = None) -> Response:
    body = ElementTree.tostring(xml_element(root, payload), encoding="utf-8",
                                xml_declaration=True)
    return Response(body, status_code=status, media_type="application/xml",
                    headers=dict(headers or {}))


def negotiated(request: Request, body: dict[str, Any], status: int,
               headers: Mapping[str, str] | None = None) -> Response:
    """An error body as JSON, or as XML (`<error>…</error>`) for a platform API request
    that asked for XML."""
    if request.url.path.startswith(PLATFORM_PREFIX) and wants_xml(request):
        return xml_response("error", body, status, headers)
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def error_response(error: TallykeyError) -> Response:
    if isinstance(error, AuthenticationError):
        return RefusalResponse(Verdict.refused(error))
    return JSONResponse(error.as_dict(), status_code=error.status, headers=error.headers())


def served_routes(app: Any) -> list[Any]:
    """Every route the app serves, included routers flattened (recent FastAPI includes
    routers lazily, so `app.routes` alone lists the routers, not their routes). Each item
    has `path`, `methods`, `path_regex` and `endpoint`."""
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(flatten(app.routes)) if flatten else list(app.routes)


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette's 405 names only the first
    route's methods when several routes share a path)."""
    methods: set[str] = set()
    for route in served_routes(request.app):
        pattern = getattr(route, "path_regex", None)
        if pattern is not None and pattern.match(request.url.path):
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def _not_json(item: Any, body: Any) -> dict[str, str]:
    """A JSON syntax error, located as a person would look for it (line and column)."""
    position = item.get("loc", ("body", 0))[-1]
    reason = str((item.get("ctx") or {}).get("error", "malformed"))
    where = f"at character {position}"
    if isinstance(position, int) and isinstance(body, str | bytes):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        where = f"at line {line}, column {column} (character {position})"
    return {"field": "body",
            "message": f"The request body is not valid JSON: {reason.lower()} {where}."}


def _describe(errors: list[Any], body: Any = None) -> tuple[str, list[dict[str, str]]]:
    described = []
    for item in errors:
        if item.get("type") == "json_invalid":
            described.append(_not_json(item, body))
            continue
        location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        described.append({"field": location or "body",
                          "message": mask_secrets(str(item.get("msg", "")))})
    first = described[0] if described else {"field": "body", "message": "invalid"}
    if first["field"] == "body" and first["message"].startswith("The request body"):
        return first["message"], described
    return f"{first['field']}: {first['message']}", described


def _verdict(request: Request, verdict: Verdict) -> Response:
    """A refusal: `RefusalResponse`, or its body as XML for a platform API request that
    asked for XML."""
    if request.url.path.startswith(PLATFORM_PREFIX) and wants_xml(request):
        return xml_response("error", verdict.body(), verdict.status, verdict.headers())
    return RefusalResponse(verdict)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TallykeyError)
    async def _product_error(request: Request, error: TallykeyError) -> Response:
        if isinstance(error, AuthenticationError):
            return _verdict(request, Verdict.refused(error))
        return negotiated(request, error.as_dict(), error.status, error.headers())

    @app.exception_handler(TallykeyRefused)
    async def _refused(request: Request, error: TallykeyRefused) -> Response:
        return _verdict(request, error.verdict)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> Response:
        message, details = _describe(list(error.errors()), error.body)
        not_json = any(e.get("type") == "json_invalid" for e in error.errors())
        hint = ("Send a well-formed JSON body with Content-Type: application/json."
                if not_json else "Fix the field named and send the request again.")
        return negotiated(request, error_body("validation_failed", message, hint,
                                              details={"errors": details}), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> Response:
        code = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed",
                413: "payload_too_large"}.get(error.status_code, "http_error")
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        hint = {400: "Send a well-formed JSON body with Content-Type: application/json.",
                413: "Send a smaller body."}.get(error.status_code, "")
        body = error_body(code, mask_secrets(str(error.detail)), hint)
        return negotiated(request, body, error.status_code, headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> Response:
        outage = store_outage(error)
        if outage is not None:  # a database error raised outside a unit of work
            return error_response(outage)
        log.exception("unhandled error")
        return JSONResponse(error_body("internal_error", "Something went wrong on our side; "
                                                         "it has been logged."),
                            status_code=500)


PROPAGATION_HEADER = "Tallykey-Propagation"


def show_propagation(response: Response, done: Propagation,
                     effect: str = "stopped") -> PropagationView:
    """How far a change reached the nodes, for an answer: the `Tallykey-Propagation`
    header on `response`, and the body's `propagation`. `effect` words the summary
    ("stopped", "works again", "applied")."""
    response.headers[PROPAGATION_HEADER] = (
        f"confirmed={len(done.confirmed)}; unconfirmed={len(done.unconfirmed)}; "
        f"waited_ms={done.waited_ms}")
    return PropagationView.of(done, effect)
