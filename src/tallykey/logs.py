"""Logging that can never carry a token: a filter that redacts anything shaped like a
tallykey token (or an `access_token=` value) from every record, access logs included."""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

from uvicorn.config import LOGGING_CONFIG

from tallykey.tokens.format import TOKEN_PATTERN

_ACCESS_TOKEN = re.compile(r"(access_token=)[^&\s\"]+", re.IGNORECASE)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    return _ACCESS_TOKEN.sub(r"\1" + REDACTED, TOKEN_PATTERN.sub(REDACTED, text))


class RedactSecrets(logging.Filter):
    """Rewrites the message and its arguments; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v
                           for k, v in record.args.items()}
        return True


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration with the redacting filter on every handler."""
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact"] = {"()": "tallykey.logs.RedactSecrets"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact")
    return config
