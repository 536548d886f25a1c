"""Request size limit, header count and security headers, as plain ASGI middleware
(`RequestBounds`, around everything but `/auth/request`, which checks its own)."""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tallykey.errors import PayloadTooLarge, TallykeyError, TooManyHeaders

MAX_BODY_BYTES = 256 * 1024
#: Routes that take larger bodies: an import of up to 10,000 keys (SPEC §16).
LARGE_BODY_PATHS = {"/api/v1/tokens/import": 8 * 1024 * 1024}
#: The whole header section (`server.uvicorn_protocol`, under `tallykey serve`) and its
#: line count.
MAX_HEADER_BYTES = 32 * 1024
MAX_HEADER_COUNT = 100

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
NO_STORE = (b"cache-control", b"no-store")
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
#: Static assets may be cached; everything else (tokens, pages, errors) may not.
CACHEABLE_PREFIXES = ("/console/static/",)


class BodyTooLarge(HTTPException):
    """Raised while streaming a body past the limit. An HTTP exception, so the framework's
    one error mapping answers 413 (not a 500) when an endpoint was reading the body."""

    def __init__(self, max_body: int) -> None:
        super().__init__(413, _too_large_message(max_body))


def _too_large_message(max_body: int) -> str:
    return (f"The request body is larger than {max_body} bytes "
            "(or its Content-Length is invalid).")


class RequestBounds:
    """Refuse bodies over `max_body` with 413 (by Content-Length up front, or while
    streaming), and add security headers to every response."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY_BYTES,
                 https: Callable[[Scope], bool] | None = None) -> None:
        self.app = app
        self.max_body = max_body
        #: Whether a request came over HTTPS (then HSTS is sent); by default the scheme.
        self.https = https or (lambda scope: scope.get("scheme") == "https")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if len(scope["headers"]) > MAX_HEADER_COUNT:
            await refuse_header_count(send, len(scope["headers"]))
            return
        max_body = (LARGE_BODY_PATHS.get(scope["path"], self.max_body)
                    if self.max_body == MAX_BODY_BYTES else self.max_body)
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit()
                                              or int(value) > max_body):
                await self._too_large(send, max_body)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    raise BodyTooLarge(max_body)
            return message

        async def secured_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                extra = [*SECURITY_HEADERS]
                if not scope["path"].startswith(CACHEABLE_PREFIXES):
                    extra.append(NO_STORE)
                message["headers"] = headers + [h for h in extra if h[0] not in present]
                if b"strict-transport-security" not in present and self.https(scope):
                    message["headers"].append(HSTS)
            await send(message)

        try:
            await self.app(scope, limited_receive, secured_send)
        except BodyTooLarge:
            if not started:
                await self._too_large(send, max_body)

    async def _too_large(self, send: Send, max_body: int) -> None:
        await _refuse(send, PayloadTooLarge(_too_large_message(max_body),
                                            "Send a smaller body."))


async def refuse_header_count(send: Send, count: int) -> None:
    """431 for a request with more than `MAX_HEADER_COUNT` header lines."""
    await _refuse(send, TooManyHeaders(
        f"The request has {count} header lines; at most {MAX_HEADER_COUNT} are accepted.",
        "Send fewer headers."))


async def _refuse(send: Send, error: TallykeyError) -> None:
    """`error`'s JSON body, from plain ASGI code (before the framework)."""
    body = json.dumps(error.as_dict()).encode()
    await send({"type": "http.response.start", "status": error.status, "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS, NO_STORE]})
    await send({"type": "http.response.body", "body": body})
