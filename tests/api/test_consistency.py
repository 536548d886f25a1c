"""One API, one set of habits: dates read the same on create and on edit, a body that is
not JSON is named as such (with line and column), every time carries `+00:00`, and the
platform API answers errors in XML when the request asked for XML."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import httpx
import pytest
from defusedxml import ElementTree
from starlette.testclient import TestClient

from tallykey.accounts.permissions import SCOPES
from tallykey.runtime import Runtime
from tallykey.server.app import create_app
from tallykey.tokens.requests import TokenDraft

from ..conftest import World

ISO_TIME = re.compile(r'"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?([^"]*))"')


@pytest.fixture
def api(rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(rt, demo=True), base_url="http://testserver",
                    client=("127.0.0.1", 40000)) as client:
        yield client


@pytest.fixture
def admin(world: World) -> dict[str, str]:
    issued = world.rt.tokens.issue(world.as_admin, TokenDraft(
        name="automation", expires_in_days=30, scopes=sorted(SCOPES)))
    return {"Authorization": f"Bearer {issued.value}"}


def test_patch_takes_a_plain_date_as_create_does(api: TestClient, admin: dict[str, str]
                                                 ) -> None:
    made = api.post("/api/v1/tokens", json={"name": "d", "expires_at": "2030-01-25"},
                    headers=admin).json()
    assert made["expires_at"] == "2030-01-26T00:00:00+00:00"  # valid through that day
    shortened = api.patch(f"/api/v1/tokens/{made['id']}", json={"expires_at": "2030-01-20"},
                          headers=admin)
    assert shortened.status_code == 200, shortened.text
    assert shortened.json()["expires_at"] == "2030-01-21T00:00:00+00:00"
    later = api.patch(f"/api/v1/tokens/{made['id']}", json={"expires_at": "2030-01-28"},
                      headers=admin)
    assert later.status_code == 422 and "cannot be extended" in later.json()["message"]
    bare = api.patch(f"/api/v1/tokens/{made['id']}", json={"expires_at": "2030-01-15T08:00"},
                     headers=admin)
    assert bare.json()["expires_at"] == "2030-01-15T08:00:00+00:00"


def test_a_body_that_is_not_json_is_named_with_line_and_column(
        api: TestClient, admin: dict[str, str]) -> None:
    answer = api.post("/api/v1/tokens", content=b'{"name": "x",\n  "expires_in_days": }',
                      headers={**admin, "Content-Type": "application/json"})
    assert answer.status_code == 422
    body = answer.json()
    assert body["message"].startswith("The request body is not valid JSON")
    assert "line 2, column 22" in body["message"]
    assert body["errors"][0]["field"] == "body"
    assert "Content-Type: application/json" in body["hint"]


def test_every_time_in_the_answers_has_an_explicit_offset(
        api: TestClient, admin: dict[str, str], world: World) -> None:
    made = api.post("/api/v1/tokens", json={"name": "t", "expires_in_days": 7},
                    headers=admin).json()
    answers = [
        api.get("/api/v1/tokens", headers=admin).text,
        api.get(f"/api/v1/tokens/{made['id']}", headers=admin).text,
        api.get(f"/api/v1/tokens/{made['id']}/usage?hours=2&days=2", headers=admin).text,
        api.get("/api/v1/audit", headers=admin).text,
        api.post(f"/api/v1/tokens/{made['id']}/rotate", json={"grace_seconds": 60},
                 headers=admin).text,
        api.post("/api/v1/session", json={"email": "admin@acme.test",
                                          "password": "correct horse battery"}).text,
    ]
    seen = 0
    for text in answers:
        for moment, offset in ISO_TIME.findall(text):
            seen += 1
            assert offset == "+00:00", f"{moment} in {text[:200]}"
    assert seen >= 10


def test_platform_errors_come_in_xml_when_xml_was_asked_for(
        api: TestClient, admin: dict[str, str]) -> None:
    xml = {"Accept": "application/xml"}
    requests: tuple[Callable[[], httpx.Response], ...] = (
        lambda: api.get("/core/v3/info", headers=xml),
        lambda: api.get("/core/v3/info", headers={**xml, **admin, "Timezone": "Mars/Base"}),
        lambda: api.post("/core/v3/employees", content=b"<employee><name>x",
                         headers={**xml, **admin, "Content-Type": "application/xml"}),
    )
    for request in requests:
        answer = request()
        assert answer.status_code >= 400
        assert answer.headers["content-type"].startswith("application/xml"), answer.text
        root = ElementTree.fromstring(answer.content)
        assert root.tag == "error" and root.findtext("error") and root.findtext("message")
    missing = api.get("/core/v3/info", headers=xml)
    assert missing.status_code == 401 and missing.headers["www-authenticate"]
    assert api.get("/core/v3/info").headers["content-type"].startswith("application/json")
    assert api.get("/api/v1/tokens", headers=xml).headers["content-type"].startswith(
        "application/json")  # the management API is JSON only


def test_rotate_says_when_the_old_secret_stops_and_end_grace_stops_it(
        api: TestClient, admin: dict[str, str]) -> None:
    made = api.post("/api/v1/tokens", json={"name": "g", "expires_in_days": 7},
                    headers=admin).json()
    assert made["previous_secret_expires_at"] is None
    rotated = api.post(f"/api/v1/tokens/{made['id']}/rotate", json={"grace_seconds": 3600},
                       headers=admin).json()
    assert rotated["previous_secret_expires_at"] == "2030-01-01T13:00:00+00:00"
    old = {"Authorization": f"Bearer {made['token']}"}
    assert api.get("/core/v3/info", headers=old).status_code == 200
    ended = api.post(f"/api/v1/tokens/{made['id']}/end-grace", headers=admin)
    assert ended.status_code == 200, ended.text
    assert api.get("/core/v3/info", headers=old).status_code == 401
    assert api.get("/core/v3/info", headers={
        "Authorization": f"Bearer {rotated['token']}"}).status_code == 200
    again = api.post(f"/api/v1/tokens/{made['id']}/end-grace", headers=admin)
    assert again.status_code == 409 and "No previous secret" in again.json()["message"]
