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
#: One-time links (password reset, first-administrator set-up) carry their secret in the
#: path. (`serve` prints the set-up link to its own output, not through logging.)
_ONE_TIME_LINK = re.compile(r"(/console/(?:reset|setup)/)[^/?#\s\"]+")
REDACTED = "[redacted]"


def redact_links(text: str) -> str:
    return _ONE_TIME_LINK.sub(r"\1" + REDACTED, text)


def redact(text: str) -> str:
    return redact_links(_ACCESS_TOKEN.sub(r"\1" + REDACTED, TOKEN_PATTERN.sub(REDACTED, text)))


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


def uvicorn_log_config(log_format: str = "text") -> dict[str, Any]:
    """uvicorn's `log_config`: its own text format, or one JSON object per line
    (`tallykey.api.access_log` writes the request lines then); either way with the
    redacting filter on every handler."""
    if log_format == "json":
        handler = {"class": "logging.StreamHandler", "formatter": "json",
                   "stream": "ext://sys.stderr"}
        config: dict[str, Any] = {
            "version": 1, "disable_existing_loggers": False,
            "formatters": {"json": {"()": "tallykey.api.access_log.JsonFormatter"}},
            "handlers": {"json": handler},
            "loggers": {
                "uvicorn": {"handlers": ["json"], "level": "INFO", "propagate": False},
                "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
                "tallykey": {"handlers": ["json"], "level": "INFO", "propagate": False},
            },
        }
    else:
        config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact"] = {"()": "tallykey.logs.RedactSecrets"}
    for handler_config in config["handlers"].values():
        handler_config.setdefault("filters", []).append("redact")
    return config
