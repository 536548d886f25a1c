"""The web console (Admin Center): server-rendered pages under `/console`, no JS build.

`router` holds every page; `STATIC_DIR` is mounted at `STATIC_PATH` by the API app.
"""

from tallykey.console.routes import STATIC_DIR, STATIC_PATH, router

__all__ = ["STATIC_DIR", "STATIC_PATH", "router"]
