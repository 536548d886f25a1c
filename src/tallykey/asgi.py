"""Helpers for the ASGI layers on every request's path."""

from __future__ import annotations

import inspect
import types

from starlette.types import ASGIApp


def direct(app: ASGIApp) -> ASGIApp:
    """What a layer calls to run `app`: for an instance whose class defines `__call__`
    in Python, that method bound once. Calling it costs a plain method call; calling the
    instance goes through the type's call slot, about half as much again per layer and
    request. The same call either way: taken when the layer is built."""
    call = inspect.getattr_static(type(app), "__call__", None)
    if isinstance(call, types.FunctionType):
        bound: ASGIApp = app.__call__  # type: ignore[operator]
        return bound
    return app
