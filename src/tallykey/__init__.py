"""tallykey: named, expiring API tokens, verified in microseconds.

The embedded, in-process API (needs the server extra: `pip install tallykey[server]`):

    from tallykey import Verifier, TallykeyMiddleware, TallykeyAuth, Verdict

The client SDK, `tallykey.client`, needs only httpx (`pip install tallykey`).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tallykey.auth.middleware import TallykeyAuth, TallykeyMiddleware
    from tallykey.auth.verdict import Verdict
    from tallykey.auth.verifier import Verifier

__all__ = ["TallykeyAuth", "TallykeyMiddleware", "Verdict", "Verifier"]

_HOMES = {"TallykeyAuth": "tallykey.auth.middleware",
          "TallykeyMiddleware": "tallykey.auth.middleware",
          "Verdict": "tallykey.auth.verdict", "Verifier": "tallykey.auth.verifier"}


def __getattr__(name: str) -> Any:
    """Import the embedded API on first use, so `import tallykey.client` pulls in no web
    framework or ORM (PEP 562)."""
    if name not in _HOMES:
        raise AttributeError(f"module 'tallykey' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
