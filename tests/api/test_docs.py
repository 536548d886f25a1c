"""`/docs` works without internet: Swagger UI comes from the installed package, and the
OpenAPI document declares the token security schemes so "Authorize" takes a token."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from tallykey.runtime import Runtime
from tallykey.server.app import create_app


def test_swagger_ui_is_served_from_the_package_with_a_bearer_scheme(rt: Runtime) -> None:
    with TestClient(create_app(rt)) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sources and all(s.startswith("/") for s in sources), sources
        assert "cdn" not in page.text.lower() and "https://" not in page.text
        for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
            served = client.get(asset)
            assert served.status_code == 200 and len(served.content) > 10_000, asset
        spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerToken"] == {**schemes["bearerToken"], "type": "http",
                                      "scheme": "bearer"}
    assert schemes["basicToken"]["scheme"] == "basic"
    assert {"bearerToken": []} in spec["security"]
    assert spec["paths"]["/api/v1/verify"]["post"]["security"] == []
    assert "security" not in spec["paths"]["/api/v1/tokens"]["get"]  # the global one applies
