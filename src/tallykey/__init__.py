"""tallykey: named, expiring API tokens, verified in microseconds.

The embedded, in-process API (needs `pip install 'tallykey[embedded]'`, or the whole
server: `pip install 'tallykey[server]'`):

    from tallykey import Verifier, TallykeyMiddleware, TallykeyAuth, Verdict

The client SDK needs only httpx (`pip install tallykey`):

    from tallykey import Client, AsyncClient          # or from tallykey.client import …

Where only the client is installed, importing the embedded API fails with one line that
names the extra to install, not a traceback into a missing third-party module.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from tallykey.errors import ServerExtraMissing
from tallykey.extras import EMBEDDED_EXTRA

if TYPE_CHECKING:
    from tallykey.auth.middleware import TallykeyAuth, TallykeyMiddleware
    from tallykey.auth.verdict import Verdict
    from tallykey.auth.verifier import Verifier
    from tallykey.client import AsyncClient, Client

__all__ = ["AsyncClient", "Client", "ServerExtraMissing", "TallykeyAuth",
           "TallykeyMiddleware", "Verdict", "Verifier"]

_HOMES = {"TallykeyAuth": "tallykey.auth.middleware",
          "TallykeyMiddleware": "tallykey.auth.middleware",
          "Verdict": "tallykey.auth.verdict", "Verifier": "tallykey.auth.verifier",
          "Client": "tallykey.client", "AsyncClient": "tallykey.client"}

def __getattr__(name: str) -> Any:
    """Import the embedded API (and the client) on first use, so `import tallykey.client`
    pulls in no web framework or ORM (PEP 562)."""
    if name not in _HOMES:
        raise AttributeError(f"module 'tallykey' has no attribute {name!r}")
    try:
        module = import_module(_HOMES[name])
    except ServerExtraMissing as missing:  # require_extra() of the package it is in
        raise ServerExtraMissing(
            f"tallykey.{name} needs the embedded extra ({missing.name} is not installed): "
            f"{EMBEDDED_EXTRA}", name=missing.name) from None
    except ModuleNotFoundError as missing:
        if missing.name is None or missing.name.split(".")[0] == "tallykey":
            raise
        raise ServerExtraMissing(
            f"tallykey.{name} needs the embedded extra ({missing.name} is not installed): "
            f"{EMBEDDED_EXTRA}", name=missing.name) from None
    return getattr(module, name)
