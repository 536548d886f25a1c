"""The region map (`TALLYKEY_REGIONS=eu1=https://…,us1=https://…`): which API base URL
serves which region. The server's settings and the client SDK read it the same way; this
module needs nothing beyond the standard library, so the client installs alone."""

from __future__ import annotations

import os
from pathlib import Path

from tallykey.demo_files import registered_regions


def parse_region_map(text: str) -> dict[str, str]:
    regions: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, url = part.partition("=")
        if not sep or not name.strip() or not url.strip():
            raise ValueError(
                f"TALLYKEY_REGIONS entry {part.strip()!r} is not of the form region=url"
            )
        regions[name.strip()] = url.strip().rstrip("/")
    return regions


def local_region_map() -> dict[str, str]:
    """This machine's region map: `TALLYKEY_REGIONS`, plus the URL a local `tallykey demo`
    registered in `TALLYKEY_DATA_DIR` for a region not named there. Without
    TALLYKEY_DATA_DIR: the demo in `./var`, else the one the user last started from any
    directory (`$XDG_STATE_HOME/tallykey/demo.json`)."""
    configured = os.environ.get("TALLYKEY_DATA_DIR")
    local = registered_regions(Path(configured or "./var"))
    if not local and not configured:
        local = registered_regions(None)
    return {**local, **parse_region_map(os.environ.get("TALLYKEY_REGIONS", ""))}
