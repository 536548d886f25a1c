"""The two ASGI apps the HTTP benchmark compares under uvicorn: one plain, one behind
`TallykeyMiddleware` (same store as `tallykey serve`, via TALLYKEY_* settings)."""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from tallykey import TallykeyMiddleware, Verifier

BODY = b'{"hello": "world"}'


async def plain(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})


def protected() -> TallykeyMiddleware:
    """Factory (uvicorn --factory): the same app, every request verified in-process."""
    return TallykeyMiddleware(plain, verifier=Verifier(), required_scopes=["employees:read"])
