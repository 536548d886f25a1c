"""deploy/caddy/Caddyfile with a real Caddy (`forward_auth`), a real tallykey server and a
small upstream app that echoes what it receives: the same cases as nginx (gateways.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ..conftest import IN_CI
from .conftest import Server, free_port
from .gateways import (
    ROOT,
    GatewayCases,
    OpenApiCases,
    Shop,
    Upstream,
    localise,
    shop,
    stop,
    tallykey,
    upstream,
    wait_until_serving,
)

CONFIG = ROOT / "deploy" / "caddy" / "Caddyfile"
SHOP_CONFIG = ROOT / "examples" / "shop_Caddyfile"
CADDY = shutil.which("caddy") or next(
    (p for p in ("/usr/bin/caddy", "/usr/local/bin/caddy") if os.access(p, os.X_OK)), None)

if CADDY is None and not IN_CI:
    pytest.skip("caddy is not installed (apt-get install caddy)", allow_module_level=True)

__all__ = ["shop", "tallykey", "upstream"]  # the shared fixtures, used by this module's tests


@contextmanager
def caddy_for(config: Path, tmp: Path, tallykey: Server, upstream: Upstream) -> Iterator[str]:
    """Caddy in the foreground with its config, data and logs in `tmp`."""
    assert CADDY is not None, "caddy is required in CI"
    port = free_port()
    site = localise(config.read_text(), [
        ("127.0.0.1:8000", f"127.0.0.1:{tallykey.port}"),
        ("127.0.0.1:9000", f"127.0.0.1:{upstream.port}"),
        ("http://:8080", f"http://127.0.0.1:{port}")], config)
    (tmp / "Caddyfile").write_text(site)
    env = {**os.environ, "HOME": str(tmp), "XDG_DATA_HOME": str(tmp / "data"),
           "XDG_CONFIG_HOME": str(tmp / "config")}
    log_path = tmp / "caddy.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([CADDY, "run", "--config", str(tmp / "Caddyfile"),
                                    "--adapter", "caddyfile"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, base, log_path)
        yield base
    finally:
        stop(process, signal.SIGTERM)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, tallykey: Server,
            upstream: Upstream) -> Iterator[str]:
    with caddy_for(CONFIG, tmp_path_factory.mktemp("caddy"), tallykey, upstream) as base:
        yield base


@pytest.fixture(scope="module")
def shop_gateway(tmp_path_factory: pytest.TempPathFactory, shop: Shop,
                 upstream: Upstream) -> Iterator[str]:
    with caddy_for(SHOP_CONFIG, tmp_path_factory.mktemp("caddy-shop"), shop.server,
                   upstream) as base:
        yield base


@pytest.mark.serial
class TestCaddy(GatewayCases):
    pass


@pytest.mark.serial
class TestCaddyOpenApi(OpenApiCases):
    pass
