"""deploy/nginx/tallykey.conf with a real nginx, a real tallykey server and a small
upstream app that echoes what it receives: who gets through, with which identity, and
that every refusal reaches the client as tallykey made it (the cases: gateways.py)."""

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
    get,
    localise,
    shop,
    stop,
    tallykey,
    upstream,
    wait_until_serving,
)

CONFIG = ROOT / "deploy" / "nginx" / "tallykey.conf"
SHOP_CONFIG = ROOT / "examples" / "shop_nginx.conf"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)

if NGINX is None and not IN_CI:
    pytest.skip("nginx is not installed (apt-get install nginx)", allow_module_level=True)

__all__ = ["shop", "tallykey", "upstream"]  # the shared fixtures, used by this module's tests


def run_nginx(tmp: Path, site: str) -> subprocess.Popen[bytes]:
    """nginx in the foreground with its own prefix, config, pid and logs in `tmp`."""
    assert NGINX is not None, "nginx is required in CI"
    (tmp / "tallykey.conf").write_text(site)
    temp_paths = "\n".join(f"    {kind}_temp_path {tmp}/{kind};"
                           for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (tmp / "nginx.conf").write_text(f"""
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
{"user root;" if os.geteuid() == 0 else ""}
events {{ worker_connections 128; }}
http {{
    access_log {tmp}/access.log;
{temp_paths}
    include {tmp}/tallykey.conf;
}}
""")
    log = (tmp / "nginx.out").open("wb")
    return subprocess.Popen([NGINX, "-e", str(tmp / "error.log"), "-p", str(tmp), "-c",
                             str(tmp / "nginx.conf")], stdout=log, stderr=subprocess.STDOUT)


@contextmanager
def nginx_for(config: Path, tmp: Path, tallykey: Server, upstream: Upstream) -> Iterator[str]:
    port = free_port()
    site = localise(config.read_text(), [
        ("127.0.0.1:8000", f"127.0.0.1:{tallykey.port}"),
        ("127.0.0.1:9000", f"127.0.0.1:{upstream.port}"),
        ("listen 8080;", f"listen 127.0.0.1:{port};")], config)
    process = run_nginx(tmp, site)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, base, tmp / "error.log")
        yield base
    finally:
        stop(process, signal.SIGQUIT)
        errors = (tmp / "error.log").read_text()
        assert "uninitialized variable" not in errors, errors


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, tallykey: Server,
            upstream: Upstream) -> Iterator[str]:
    with nginx_for(CONFIG, tmp_path_factory.mktemp("nginx"), tallykey, upstream) as base:
        yield base


@pytest.fixture(scope="module")
def shop_gateway(tmp_path_factory: pytest.TempPathFactory, shop: Shop,
                 upstream: Upstream) -> Iterator[str]:
    with nginx_for(SHOP_CONFIG, tmp_path_factory.mktemp("nginx-shop"), shop.server,
                   upstream) as base:
        yield base


@pytest.mark.serial
class TestNginx(GatewayCases):
    def test_the_verification_location_is_internal(self, gateway: str,
                                                   tallykey: Server) -> None:
        response = get(gateway, "/_tallykey/auth", tallykey.seeded["admin"]["token"])
        assert response.status_code == 404


@pytest.mark.serial
class TestNginxOpenApi(OpenApiCases):
    pass


@pytest.mark.serial
def test_tallykey_unreachable_is_503_and_the_app_is_not_called(
        tmp_path: Path, upstream: Upstream) -> None:
    port = free_port()
    site = localise(CONFIG.read_text(), [
        ("127.0.0.1:8000", f"127.0.0.1:{free_port()}"),  # nobody listens there
        ("127.0.0.1:9000", f"127.0.0.1:{upstream.port}"),
        ("listen 8080;", f"listen 127.0.0.1:{port};")], CONFIG)
    process = run_nginx(tmp_path, site)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, base, tmp_path / "error.log")
        response = get(base, "/unreachable", "tlk_eu1_anything")
        assert response.status_code == 503
        assert response.json()["error"] == "verification_unavailable"
        assert upstream.hits("/unreachable") == []
    finally:
        stop(process, signal.SIGQUIT)
