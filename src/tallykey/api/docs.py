"""The API documentation at `/docs`: Swagger UI served from the installed
`swagger-ui-bundle-v2` package (Swagger UI 5, Apache-2.0; no CDN, so it works offline),
and an OpenAPI document that declares how to authenticate, so "Authorize" takes a token."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"

#: How requests authenticate (SPEC §3); the management API also takes a console session.
SECURITY_SCHEMES: dict[str, Any] = {
    "bearerToken": {
        "type": "http", "scheme": "bearer", "bearerFormat": "tlk_<region>_<61 characters>",
        "description": "A tallykey token: `Authorization: Bearer tlk_…`. The management "
                       "API needs an administrator's personal token with `tokens:manage`."},
    "basicToken": {
        "type": "http", "scheme": "basic",
        "description": "An application token as HTTP Basic: username = its prefix, password "
                       "= the rest (or the whole token as the username, empty password)."},
}
#: Operations anyone may call (they authenticate otherwise, or not at all).
PUBLIC_OPERATIONS = {("post", "/api/v1/verify"), ("post", "/api/v1/leaks"),
                     ("post", "/api/v1/session"), ("get", "/healthz")}


def openapi_with_security(api: FastAPI) -> dict[str, Any]:
    """The OpenAPI document with the token security schemes on every protected call."""
    if api.openapi_schema:
        return api.openapi_schema
    schema = get_openapi(title=api.title, version=api.version, description=api.description,
                         routes=api.routes, tags=api.openapi_tags)
    schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    schema["security"] = [{"bearerToken": []}, {"basicToken": []}]
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if (method, path) in PUBLIC_OPERATIONS:
                operation["security"] = []
    api.openapi_schema = schema
    return schema


def install(api: FastAPI) -> None:
    api.openapi = lambda: openapi_with_security(api)  # type: ignore[method-assign]
    api.mount(ASSETS_PATH, StaticFiles(directory=swagger_ui_path), name="swagger-ui")

    @api.get(DOCS_PATH, include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=api.openapi_url or "/openapi.json", title="tallykey API",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url="/console/static/favicon.svg",
            oauth2_redirect_url=OAUTH2_REDIRECT_PATH,
            swagger_ui_parameters={"persistAuthorization": False})

    @api.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
