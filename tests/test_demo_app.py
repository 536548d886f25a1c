"""The demo stays a demo (SPEC §14): the app `tallykey serve` runs has no `/core/v3` and
its show-once page points "Try it" at `/api/v1/verify`; the demo's app (`tallykey demo`)
has both the platform API and a "Try it" against it."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tallykey.runtime import Runtime
from tallykey.server.app import create_app, create_demo_app

from .conftest import World
from .console.conftest import sign_in
from .console.test_pages import SECRET, create, group_of


@pytest.mark.parametrize(("demo", "try_it", "platform_status"), [
    (False, "/api/v1/verify", 404), (True, "/core/v3/info", 200)])
def test_only_the_demo_app_serves_the_platform_api_and_points_try_it_there(
        rt: Runtime, world: World, demo: bool, try_it: str, platform_status: int) -> None:
    app = create_demo_app(rt) if demo else create_app(rt)
    with TestClient(app, base_url="http://testserver", client=("127.0.0.1", 40000),
                    follow_redirects=False) as client:
        csrf = sign_in(client, "admin@acme.test", "correct horse battery")
        made = create(client, csrf, kind="personal", scopes=["employees:read"], expiry="30")
        secret = group_of(SECRET, made.text)
        assert try_it in made.text and (demo or "/core/v3" not in made.text)
        answer = client.get("/core/v3/info", headers={"Authorization": f"Bearer {secret}"})
        assert answer.status_code == platform_status, answer.text
        paths = client.get("/openapi.json").json()["paths"]
        assert ("/core/v3/info" in paths) is demo
