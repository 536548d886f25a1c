"""The `tallykey` command line (`tallykey.cli.main.app`), one module per command group;
`output` and `context` at the bottom are what every command prints and runs with.

The command needs the server extra; `main` says so in one line where only the client SDK
is installed (`pip install tallykey`).
"""

from __future__ import annotations

import sys
from typing import Any


def main() -> None:  # pragma: no cover - the console entry point
    try:
        from tallykey.cli.main import app
    except ModuleNotFoundError as missing:
        sys.stderr.write(f"error: the tallykey command needs the server extra ({missing.name} "
                         "is not installed). Install it: pip install 'tallykey[server]'\n")
        raise SystemExit(1) from None
    app()


def __getattr__(name: str) -> Any:
    """`from tallykey.cli import app`, imported on first use (PEP 562)."""
    if name == "app":
        from tallykey.cli.main import app

        return app
    raise AttributeError(f"module 'tallykey.cli' has no attribute {name!r}")
