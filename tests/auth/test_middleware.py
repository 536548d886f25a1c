"""`TallykeyMiddleware` and `TallykeyAuth` in-process, over a real store: both answer a
refusal with the same top-level JSON body and challenge, a token in `X-API-Key` is told
to move to `Authorization`, and `curl -u tlk_…:` passes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from starlette.testclient import TestClient

from tallykey import TallykeyAuth, TallykeyMiddleware, Verdict, Verifier
from tallykey.auth.caller import token_in_url
from tallykey.runtime import Runtime
from tallykey.settings import Settings
from tallykey.tokens.requests import TokenDraft

from ..conftest import World


@pytest.fixture
def verifier(settings: Settings, rt: Runtime) -> Iterator[Verifier]:
    made = Verifier(settings=settings, clock=rt.clock, background=False)
    yield made
    made.close()


def protected(verifier: Verifier) -> tuple[TestClient, TestClient]:
    routed = FastAPI()

    auth = TallykeyAuth(verifier, ["employees:write"])

    @routed.get("/write")
    def write(verdict: Verdict = Depends(auth)) -> dict[str, Any]:
        return {"token": verdict.token_id}

    async def plain(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    wrapped = TallykeyMiddleware(plain, verifier=verifier, required_scopes=["employees:write"])
    return TestClient(routed), TestClient(wrapped)


def test_dependency_and_middleware_refuse_with_the_same_body(world: World,
                                                             verifier: Verifier) -> None:
    member = world.rt.tokens.issue(world.as_member, TokenDraft(
        name="reader", expires_in_days=7, scopes=["employees:read"])).value
    routed, wrapped = protected(verifier)
    for headers in ({"Authorization": f"Bearer {member}"}, {}, {"X-API-Key": member},
                    {"Authorization": "Bearer nope"}):
        by_dependency = routed.get("/write", headers=headers)
        by_middleware = wrapped.get("/write", headers=headers)
        assert by_dependency.status_code == by_middleware.status_code >= 400
        assert by_dependency.json() == by_middleware.json()
        assert "detail" not in by_dependency.json() and by_dependency.json()["error"]
        assert by_dependency.headers["www-authenticate"] == \
            by_middleware.headers["www-authenticate"]
    assert routed.get("/write", headers={"Authorization": f"Bearer {member}"}
                      ).json()["error"] == "insufficient_scope"


def test_a_token_in_x_api_key_is_told_where_it_belongs(world: World,
                                                       verifier: Verifier) -> None:
    token = world.rt.tokens.issue(world.as_admin, TokenDraft(
        name="writer", expires_in_days=7)).value
    _, wrapped = protected(verifier)
    answer = wrapped.get("/", headers={"X-API-Key": token})
    assert answer.status_code == 401
    body = answer.json()
    assert "X-API-Key" in body["message"] and "only the Authorization header" in body["message"]
    assert body["hint"] == "Send the same token as: Authorization: Bearer <token>"
    assert token not in answer.text
    assert wrapped.get("/", auth=(token, "")).status_code == 200  # curl -u tlk_…:
    assert wrapped.get("/", headers={"Authorization": f"Bearer {token}",
                                     "X-API-Key": "x"}).status_code == 200


def test_the_management_api_names_a_misplaced_header_too(world: World, rt: Runtime) -> None:
    from tallykey.server.app import create_app

    token = world.rt.tokens.issue(world.as_admin, TokenDraft(
        name="manager", expires_in_days=7, scopes=["tokens:manage"])).value
    with TestClient(create_app(rt, demo=True)) as client:
        answer = client.get("/api/v1/tokens", headers={"X-Api-Key": token})
        assert answer.status_code == 401 and "X-API-Key" in answer.json()["message"]
        assert client.get("/api/v1/tokens", auth=(token, "")).status_code == 200
        info = client.get("/core/v3/info", headers={"X-API-Key": token})
        assert info.status_code == 401 and "X-API-Key" in info.json()["message"]


def test_the_expiry_header_is_on_unless_left_off(world: World, verifier: Verifier) -> None:
    token = world.rt.tokens.issue(world.as_admin, TokenDraft(
        name="embedded", expires_in_days=7)).value
    seen: list[Verdict] = []

    async def plain(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["state"]["tallykey"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    bearer = {"Authorization": f"Bearer {token}"}
    with_expiry = TestClient(TallykeyMiddleware(plain, verifier=verifier)).get("/",
                                                                               headers=bearer)
    assert with_expiry.headers["tallykey-token-expires"] == seen[0].expires_iso
    without = TestClient(TallykeyMiddleware(plain, verifier=verifier, expiry_header=False)
                         ).get("/", headers=bearer)
    assert without.status_code == 200 and "tallykey-token-expires" not in without.headers
    assert seen[1].expires_at is not None


def test_public_paths_need_no_token_and_nothing_else_is_opened(world: World,
                                                               verifier: Verifier) -> None:
    """The app's own `/docs` answered 401 (issue 27): exact paths, `*` prefixes and
    functions of the request are public; everything else still needs a token."""
    app = FastAPI()

    @app.get("/items")
    def items() -> dict[str, str]:
        return {"items": "secret"}

    @app.get("/static/{name}")
    def static(name: str) -> dict[str, str]:
        return {"file": name}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    client = TestClient(TallykeyMiddleware(
        app, verifier=verifier,
        public_paths=["/docs", "/openapi.json", "/static/*",
                      lambda request: request.url.path == "/health"
                      and request.method == "GET"]))
    assert client.get("/docs").status_code == 200
    assert "Swagger" in client.get("/docs").text
    assert client.get("/openapi.json").json()["paths"]
    assert client.get("/static/logo.png").json() == {"file": "logo.png"}
    assert client.get("/health").json() == {"status": "ok"}
    for closed in ("/items", "/docs/../items", "/docsx", "/static", "/openapi.json/x"):
        answer = client.get(closed)
        assert answer.status_code == 401, closed
        assert answer.json()["reason"] == "missing"
    assert client.post("/health").status_code == 401  # the function said GET only
    token = world.rt.tokens.issue(world.as_admin, TokenDraft(
        name="embedded", expires_in_days=7)).value
    assert client.get("/items", headers={"Authorization": f"Bearer {token}"}
                      ).json() == {"items": "secret"}
    only_a_function = TestClient(TallykeyMiddleware(
        app, verifier=verifier, public_paths=lambda request: request.url.path == "/health"))
    assert only_a_function.get("/health").status_code == 200
    assert only_a_function.get("/docs").status_code == 401
    with pytest.raises(ValueError, match="start with '/'"):
        TallykeyMiddleware(app, verifier=verifier, public_paths=["docs"])


@pytest.mark.parametrize("query", [
    b"access_token=x", b"ACCESS_TOKEN=x", b"Access_Token=x", b"a=1&access%5Ftoken=x",
    b"access%5Ftoken=x", b"q=tlk_eu1_abc", b"q=tlk%5Feu1_abc", b"q=%74lk_eu1_abc"])
def test_a_token_in_the_query_is_refused_however_it_is_spelled(query: bytes) -> None:
    refused = token_in_url(query)
    assert refused is not None and refused.status == 400
    assert "never in a URL" in refused.message


@pytest.mark.parametrize("query", [b"", b"a=1", b"page_size=5", b"q=%20tlk", b"name=token"])
def test_other_queries_pass_the_url_check(query: bytes) -> None:
    assert token_in_url(query) is None
