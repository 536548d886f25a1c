"""`/auth/request` in-process (`api.verify.AuthRequestEndpoint`): the 204 carries the
cached identity headers and `Cache-Control: no-store` only, refusals carry every
security header, header floods are refused before any verification, and the query
string splitter agrees with `parse_qsl`."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tallykey.api.verify import AuthRequestEndpoint, query_arguments
from tallykey.auth.verifier import Verifier
from tallykey.runtime import Runtime
from tallykey.settings import Settings
from tallykey.tokens.requests import TokenDraft

from ..conftest import World

BROWSER_ONLY = ("x-content-type-options", "x-frame-options", "referrer-policy")


@pytest.fixture
def client(settings: Settings, rt: Runtime) -> Iterator[TestClient]:
    verifier = Verifier(settings=settings, clock=rt.clock, background=False)
    yield TestClient(AuthRequestEndpoint(verifier, settings))
    verifier.close()


def test_an_allowed_request_gets_identity_headers_and_no_store(world: World,
                                                               client: TestClient) -> None:
    token = world.rt.tokens.issue(world.as_member, TokenDraft(
        name="proxy", expires_in_days=7, scopes=["employees:read"])).value
    bearer = {"Authorization": f"Bearer {token}"}
    for _ in range(2):  # the second answer comes from the cached verdict's headers
        ok = client.get("/auth/request", params={"scope": "employees:read",
                                                 "workspace": "sales"}, headers=bearer)
        assert ok.status_code == 204
        assert ok.headers["tallykey-account"] == "acme"
        assert ok.headers["tallykey-scopes"] == "employees:read"
        assert ok.headers["tallykey-workspace"] == world.sales.id
        assert ok.headers["tallykey-user-id"] == world.member.id
        assert ok.headers["tallykey-token-expires"]
        assert ok.headers["cache-control"] == "no-store"
        assert not any(name in ok.headers for name in BROWSER_ONLY)
    refused = client.get("/auth/request", params={"scope": "employees:write"},
                         headers=bearer)
    assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope"
    assert refused.headers["cache-control"] == "no-store"
    assert all(name in refused.headers for name in BROWSER_ONLY)


def test_refusals_before_any_verification(client: TestClient) -> None:
    flood = client.get("/auth/request", headers={f"x-filler-{n}": "x" for n in range(120)})
    assert flood.status_code == 431 and flood.json()["error"] == \
        "request_header_fields_too_large"
    two = client.get("/auth/request", params={"workspace": "sales"},
                     headers={"Tallykey-Workspace": "ops"})
    assert two.status_code == 400 and "more than one workspace" in two.json()["message"]
    assert client.get("/auth/request").status_code == 401


@given(st.text(alphabet="ab=&%+;2Fé ", max_size=24))
def test_query_arguments_agree_with_parse_qsl(query: str) -> None:
    raw = query.encode("latin-1", "replace")
    assert query_arguments(raw) == parse_qsl(raw.decode("latin-1"))
