"""The HTTP edge's CPU cost per request, in process and without an event loop or a
socket: the ASGI apps the throughput benchmark compares, each driven with the same
fixed requests (a valid, cached token), plus the verifier's cache hit on its own.

    python bench/edge_profile.py                 # µs per request (noisy on a busy box)
    valgrind --tool=callgrind --zero-before=os_getpgrp --dump-before=os_getppid \\
        --callgrind-out-file=/tmp/edge.%p python bench/edge_profile.py --marks

With `--marks` each measured stretch starts with `os.getpgrp()` and ends with
`os.getppid()`, so callgrind writes one profile per stretch (bare, middleware,
auth_request, auth_request_scoped, hit, in that order; the last file holds only the
teardown): their instruction totals divided by `--requests` are the instructions per
request, the same on a quiet and a loaded machine. `--only NAME` measures one stretch.

The coroutines are stepped by hand: every request here finishes without suspending
(a cache hit needs no I/O), and one that would suspend fails loudly. The feed lease is
held for the run (a lease running out would turn hits into feed reads); the usage
counts are never flushed. What is measured is the app, not uvicorn's parser or the
event loop, which are the same for every app.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from apps import plain
from starlette.types import ASGIApp, Message
from store import build

from tallykey import TallykeyMiddleware, Verifier
from tallykey.runtime import Runtime
from tallykey.server.app import create_app

IP = "127.0.0.1"
NAMES = ("bare", "middleware", "auth_request", "auth_request_scoped", "hit")


def scopes(path: str, token: str, count: int, query: bytes = b"") -> list[dict[str, Any]]:
    """What uvicorn hands the app for `GET path?query` from a proxy on localhost."""
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"),
               (b"accept", b"*/*"), (b"authorization", f"Bearer {token}".encode())]
    return [{"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
             "http_version": "1.1", "server": ("127.0.0.1", 8000), "client": (IP, 50000),
             "scheme": "http", "method": "GET", "root_path": "", "path": path,
             "raw_path": path.encode(), "query_string": query, "headers": headers,
             "state": {}} for _ in range(count)]


def step(coroutine: Coroutine[Any, Any, None]) -> None:
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise RuntimeError("the request suspended: it was not answered from the cache")


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class Answers:
    """The `send` of every request: keeps the last status (checked after the run)."""

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            status = message["status"]
            self.statuses[status] = self.statuses.get(status, 0) + 1


def serve(app: ASGIApp, requests: list[dict[str, Any]], answers: Answers) -> Callable[[], None]:
    def run() -> None:
        for scope in requests:
            step(app(scope, receive, answers))
    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--marks", action="store_true",
                        help="os.getpgrp() before and os.getppid() after each stretch (callgrind)")
    parser.add_argument("--only", choices=NAMES, action="append")
    args = parser.parse_args()
    n = args.requests
    only = args.only or list(NAMES)
    with tempfile.TemporaryDirectory() as tmp:
        settings, tokens = build(Path(tmp) / "store", 4, 4)
        # the longest TTL allowed: a stretch under callgrind takes a while
        settings = settings.model_copy(update={"cache_ttl": 60.0})
        token = tokens[0]
        runtime = Runtime.build(settings)
        app = create_app(runtime)
        verifier = Verifier(settings=settings, background=False)
        middleware = TallykeyMiddleware(plain, verifier=verifier,
                                        required_scopes=["employees:read"])
        answers = Answers()
        runs: dict[str, Callable[[], None]] = {
            "bare": serve(plain, scopes("/", token, n), answers),
            "middleware": serve(middleware, scopes("/", token, n), answers),
            "auth_request": serve(app, scopes("/auth/request", token, n), answers),
            # as bench/throughput.py asks it: the scope a proxy passes in the query
            "auth_request_scoped": serve(app, scopes("/auth/request", token, n,
                                                     b"scope=employees:read"), answers),
        }
        header = f"Bearer {token}"
        required = ("employees:read",)

        def hits() -> None:
            verify = verifier.verify
            for _ in range(n):
                verify(header, IP, required)

        runs["hit"] = hits
        followers = (verifier.follower, app_verifier(app).follower)
        # every code path run once (a miss may suspend: under a loop)
        for warm in (middleware, app):
            for scope in scopes("/auth/request", token, 2):
                asyncio.run(warm(scope, receive, answers))

        def warm_up() -> None:
            """The token cached anew (a slow run may outlast the cache TTL since the
            last stretch), the lease held."""
            for known in (verifier, app_verifier(app)):
                known.verify(header, IP, required)
            for follower in followers:
                follower.serve_until = float("inf")

        answers.statuses.clear()
        results: dict[str, Any] = {"requests": n}
        for name in NAMES:
            if name not in only:
                continue
            warm_up()
            if args.marks:
                os.getpgrp()  # callgrind: counting starts from zero here
            started = time.process_time()
            runs[name]()
            spent = time.process_time() - started
            if args.marks:
                os.getppid()  # callgrind: this stretch's profile is written here
            results[f"{name}_us"] = round(spent / n * 1e6, 2)
        results["statuses"] = answers.statuses
        print(json.dumps(results))
        verifier.close()
        runtime.close()


def app_verifier(app: ASGIApp) -> Verifier:
    """The verifier inside `create_app`'s stack (found through its wrappers)."""
    layer: Any = app
    while not hasattr(layer, "fast_path"):
        layer = layer.app
    found = layer.fast_path.verifier
    assert isinstance(found, Verifier)
    return found


if __name__ == "__main__":
    main()
