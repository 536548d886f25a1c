"""What a local demo keeps in its data directory, every file marked demo-only.

- `demo.json`: the demo's URL and region (so `tallykey connect --region eu1` on this
  machine finds the local demo) and the demo tokens it printed, so a second run prints
  the same live tokens instead of rotating them under a running demo.
- `demo-kek`: a key-encryption key generated for the demo, so retrievable application
  tokens can be shown. Never use it outside the demo.

Both files are readable by their owner only. Nothing here is used unless a demo ran in
this data directory.

A serving demo also leaves its URL and region (never a token) in the user's state
directory, `$XDG_STATE_HOME/tallykey/demo.json` (default `~/.local/state/tallykey/`), so
`tallykey connect --region eu1` finds it from any directory when TALLYKEY_DATA_DIR is not
set and `./var` holds no demo.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from pathlib import Path
from typing import Any

STATE_FILE = "demo.json"
KEK_FILE = "demo-kek"
KEK_ID = "demo-only"
NOTE = ("DEMO ONLY: written by `tallykey demo`. It holds the demo's tokens in clear; "
        "never keep a file like this for real tokens.")


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def kek_path(data_dir: Path) -> Path:
    return data_dir / KEK_FILE


def ensure_kek(data_dir: Path) -> Path:
    """The demo's key-encryption key file (`id:base64`, TALLYKEY_KEK_FILE's format),
    made on first use."""
    path = kek_path(data_dir)
    if not path.exists():
        _write_private(path, f"{KEK_ID}:{base64.b64encode(os.urandom(32)).decode()}\n")
    return path


def load_state(data_dir: Path) -> dict[str, Any]:
    """What the last demo run left; empty when there was none (or it is unreadable)."""
    return _read(data_dir / STATE_FILE)


def _read(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def save_state(data_dir: Path, *, base_url: str | None, region: str,
               tokens: dict[str, str]) -> None:
    """Remember the tokens; and the URL, when given (a serving demo registers it, in the
    data directory and for the user; a `--seed-only` run keeps the registration it
    finds)."""
    previous = load_state(data_dir)
    url = base_url if base_url is not None else previous.get("base_url")
    _write_private(data_dir / STATE_FILE, json.dumps(
        {"note": NOTE, "base_url": url, "region": region, "tokens": tokens}, indent=2))
    registry = user_registry()
    if base_url is not None and registry is not None:
        # a read-only home: `connect` then needs TALLYKEY_DATA_DIR or --base-url
        with contextlib.suppress(OSError):
            _write_private(registry, json.dumps(
                {"note": "Written by `tallykey demo`: where the last local demo serves.",
                 "base_url": base_url, "region": region,
                 "data_dir": str(data_dir.resolve())}, indent=2))


def user_registry() -> Path | None:
    """Where a serving demo registers its URL for this user (None without a home)."""
    base = os.environ.get("XDG_STATE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".local" / "state")
        except RuntimeError:
            return None
    return Path(base) / "tallykey" / STATE_FILE


def known_tokens(data_dir: Path) -> dict[str, str]:
    """token id -> the demo token string printed last time."""
    tokens = load_state(data_dir).get("tokens")
    return {str(k): str(v) for k, v in tokens.items()} if isinstance(tokens, dict) else {}


def registered_regions(data_dir: Path | None) -> dict[str, str]:
    """{region: base URL} of a local demo in this data dir (None: the one registered for
    the user), for `tallykey connect`."""
    registry = user_registry() if data_dir is None else data_dir / STATE_FILE
    state = _read(registry) if registry is not None else {}
    region, base_url = state.get("region"), state.get("base_url")
    if isinstance(region, str) and isinstance(base_url, str) and region and base_url:
        return {region: base_url}
    return {}
