"""Structured logs: one JSON line per request (`AccessLog`, a pure ASGI wrapper) and a
JSON formatter for every other log record, enabled by `tallykey serve --log-format json`.

A request line holds the method, the path (never the query string), the status, the
duration, the client IP and the id of the token that authenticated it, when one did.
Never the Authorization header or any secret: lines pass through the same redaction as
outgoing mails, so even a token pasted into a URL path is logged as `[redacted token]`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tallykey.auth.caller import TOKEN_ID_STATE
from tallykey.logs import redact_links
from tallykey.network.client_ip import IpNetwork, scope_client_ip
from tallykey.tokens.format import TOKEN_PATTERN

ACCESS_LOGGER = "tallykey.access"
REDACTED = "[redacted token]"
log = logging.getLogger(ACCESS_LOGGER)

#: Attributes every `LogRecord` has; anything else was passed with `extra=`.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", ...extra fields}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage()}
        line.update({k: v for k, v in record.__dict__.items()
                     if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        text = json.dumps(line, default=str, ensure_ascii=False)
        return redact_links(TOKEN_PATTERN.sub(REDACTED, text))


class AccessLog:
    """Logs one line per HTTP request after its response has been sent (or failed)."""

    def __init__(self, app: ASGIApp, trusted_proxies: Sequence[IpNetwork] = ()) -> None:
        self.app = app
        self.trusted = tuple(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            self._log(scope, status, time.perf_counter() - started)

    def _log(self, scope: Scope, status: int, seconds: float) -> None:
        state = scope.get("state") or {}
        log.info("%s %s %d", scope.get("method", ""), scope.get("path", ""), status, extra={
            "method": scope.get("method", ""), "path": scope.get("path", ""),
            "status": status, "duration_ms": round(seconds * 1000, 3),
            "client_ip": scope_client_ip(scope, self.trusted),
            "token_id": state.get(TOKEN_ID_STATE)})
