"""`tallykey serve --server granian`: the same app under granian (a Rust HTTP server, the
optional extra `tallykey[granian]`) instead of uvicorn.

Kept equal to the uvicorn setup: HTTP/1.1 only, the header section bounded (hyper's read
buffer, at `MAX_HEADER_BYTES`: a longer header section is answered 431), 5 s for
in-flight requests on SIGTERM, every log record through the secret-redacting filter,
and `--log-format json` writing the request lines itself (`api.access_log`).
"""

from __future__ import annotations

import copy
from typing import Any

from tallykey.web.bounds import MAX_HEADER_BYTES

APP = "tallykey.server.app:create_app"
#: Seconds in-flight requests get after SIGTERM (as `timeout_graceful_shutdown` under
#: uvicorn); each is bounded by the store timeouts anyway.
GRACE_SECONDS = 5


def available() -> bool:
    try:
        import granian  # noqa: F401
    except ImportError:
        return False
    return True


def log_config(log_format: str) -> dict[str, Any]:
    """granian's `log_dictconfig`: its own loggers, text or JSON, redacted."""
    from granian.log import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    if log_format == "json":
        config["formatters"] = {"json": {"()": "tallykey.api.access_log.JsonFormatter"}}
        config["handlers"] = {"json": {"class": "logging.StreamHandler", "formatter": "json",
                                       "stream": "ext://sys.stderr"}}
        config["loggers"] = {
            "_granian": {"handlers": ["json"], "level": "INFO", "propagate": False},
            "granian.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "tallykey": {"handlers": ["json"], "level": "INFO", "propagate": False},
        }
    config.setdefault("filters", {})["redact"] = {"()": "tallykey.logs.RedactSecrets"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact")
    return config


def serve(host: str, port: int, workers: int, access_log: bool, log_format: str,
          app: str = APP) -> None:
    """Run the app under granian until SIGTERM/SIGINT."""
    import multiprocessing

    # Workers start as fresh interpreters (as uvicorn's do), not forks of this process:
    # prometheus-client decides at import whether metrics are shared between workers,
    # and here it was imported before `--workers N` chose the multiprocess mode.
    multiprocessing.set_start_method("spawn", force=True)
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    Server(app, address=host, port=port, interface=Interfaces.ASGI, workers=workers,
           factory=True, loop=Loops.uvloop, http=HTTPModes.http1, websockets=False,
           http1_settings=HTTP1Settings(max_buffer_size=MAX_HEADER_BYTES),
           log_level=LogLevels.info, log_dictconfig=log_config(log_format),
           log_access=access_log and log_format != "json",
           workers_kill_timeout=GRACE_SECONDS).serve()
