"""Browser tests: Debian's chromium driven by Playwright against a real, empty
`tallykey serve` (first run: no administrator, so it prints a one-time setup link).

Without /usr/bin/chromium (or the playwright package) these tests skip, except in CI
(`CI=true`), where they fail. Nothing is ever downloaded: `playwright install` is not used.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..conftest import fresh_postgres_database
from ..e2e.conftest import Server, free_port, server_env

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "browser"
EXPECTED = re.compile(r"^Failed to load resource: the server responded with a status of "
                      r"(401|403|404|409|410|422)\b")
SETUP_LINK = re.compile(r"(http://\S+/console/setup/[A-Za-z0-9_-]+)")


@dataclass
class Site:
    """A fresh server and what the tests learn about it as they go."""

    server: Server
    backend: str
    setup_link: str
    admin: dict[str, str] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def screenshot(self, page: Any, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{name}-{self.backend}.png"), full_page=True)


def _read_setup_link(server: Server) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = SETUP_LINK.search(server.log_path.read_text())
        if found:
            return found.group(1)
        time.sleep(0.1)
    raise AssertionError(f"no setup link printed: {server.log_path.read_text()}")


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Site]:
    """An empty store served by the real CLI: no accounts, no users."""
    tmp = tmp_path_factory.mktemp(f"browser-{request.param}")
    with ExitStack() as stack:
        url = (stack.enter_context(fresh_postgres_database())
               if request.param == "postgresql" else None)
        server = Server(env=server_env(tmp, url), port=free_port(),
                        log_path=tmp / "server.log", command=("serve",))
        if url:
            server.cli("migrate")
        server.start()
        stack.callback(server.stop)
        yield Site(server, request.param, _read_setup_link(server))


@pytest.fixture
def new_context(browser: Any, site: Site) -> Iterator[Any]:
    """Browser contexts (each its own cookie jar) that fail the test on any script error,
    CSP violation or missing asset. Pages answered with an error status on purpose (401,
    403, 404, 410) are not problems."""
    contexts: list[Any] = []
    problems: list[str] = []

    def make(**options: Any) -> Any:
        context = browser.new_context(base_url=site.base_url, **options)
        context.set_default_timeout(10_000)
        context.grant_permissions(["clipboard-read", "clipboard-write"],
                                  origin=site.base_url)

        def watch(page: Any) -> None:
            page.on("console", lambda message: problems.append(message.text)
                    if message.type == "error" and not EXPECTED.search(message.text)
                    else None)
            page.on("response", lambda response: problems.append(response.url)
                    if response.status >= 400 and "/static/" in response.url else None)
            page.on("pageerror", lambda error: problems.append(str(error)))

        context.on("page", watch)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()
    assert not problems, f"browser reported errors: {problems}"
