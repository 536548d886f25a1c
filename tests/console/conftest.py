"""The console app in-process (Starlette's TestClient over the real ASGI app and a real
store, SQLite and PostgreSQL), with a signed-in browser-like client per user."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from starlette.testclient import TestClient

from tallykey.runtime import Runtime
from tallykey.server.app import create_app

from ..conftest import World

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
Browser = Callable[[], TestClient]


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "page has no CSRF field"
    return found.group(1)


@pytest.fixture
def new_client(rt: Runtime) -> Iterator[Browser]:
    app = create_app(rt)
    clients: list[TestClient] = []

    def make() -> TestClient:
        client = TestClient(app, base_url="http://testserver", client=("127.0.0.1", 40000),
                            follow_redirects=False)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def sign_in(client: TestClient, email: str, password: str) -> str:
    """Sign in through the login form; returns the session's CSRF token."""
    page = client.get("/console/login")
    answer = client.post("/console/login", data={
        "csrf_token": csrf_of(page.text), "email": email, "password": password, "next": ""})
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get("/console/tokens").text)


@pytest.fixture
def admin(world: World, new_client: Browser) -> tuple[TestClient, str]:
    client = new_client()
    return client, sign_in(client, "admin@acme.test", "correct horse battery")


@pytest.fixture
def member(world: World, new_client: Browser) -> tuple[TestClient, str]:
    client = new_client()
    return client, sign_in(client, "member@acme.test", "member password 1")
