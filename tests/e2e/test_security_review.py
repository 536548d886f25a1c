"""The second security review's findings (issue #15), replayed against a real server:
each test attacks the way the review did and fails on the code before the fix."""

from __future__ import annotations

from typing import Any

import httpx

from .conftest import Server


def send(server: Server, method: str, path: str, headers: list[tuple[str, str]] | None = None,
         source: str = "127.0.0.1", **kwargs: Any) -> httpx.Response:
    """A request from `source`; headers as a list, so a name may repeat."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=server.base_url, transport=transport, timeout=15) as client:
        return client.request(method, path, headers=headers or [], **kwargs)


def admin(server: Server, method: str, path: str, **kwargs: Any) -> httpx.Response:
    token = server.seeded["admin"]["token"]
    return send(server, method, path, [("Authorization", f"Bearer {token}")], **kwargs)


def new_token(server: Server, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "review token")
    body.setdefault("expires_in_days", 30)
    response = admin(server, "POST", "/api/v1/tokens", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


# --- 1. one client IP for every surface ----------------------------------------------


def test_two_forwarded_for_lines_are_one_list_on_every_surface(server: Server) -> None:
    """A proxy that adds its own `X-Forwarded-For` line (HAProxy `option forwardfor`)
    after the client's forged one: every surface sees the address the proxy saw."""
    allowed_ip, real_ip = "203.0.113.7", "198.51.100.9"
    made = new_token(server, scopes=["tokens:manage", "employees:read"],
                     ip_allowlist=[f"{allowed_ip}/32"])
    bearer = ("Authorization", f"Bearer {made['token']}")
    forged = [bearer, ("X-Forwarded-For", allowed_ip), ("X-Forwarded-For", real_ip)]
    surfaces = [("GET", "/api/v1/tokens"), ("GET", "/core/v3/info"),
                ("GET", "/auth/request")]
    for method, path in surfaces:
        response = send(server, method, path, forged, source="127.0.0.2")
        assert response.status_code == 403, (path, response.text)
        assert response.json()["ip"] == real_ip, path
    verified = send(server, "POST", "/api/v1/verify", [("X-Forwarded-For", allowed_ip),
                                                       ("X-Forwarded-For", real_ip)],
                    source="127.0.0.2", json={"token": made["token"]})
    assert verified.json()["allowed"] is False and verified.json()["client_ip"] == real_ip
    # the other order: the proxy's line names the allowed client, and every surface agrees
    honest = [bearer, ("X-Forwarded-For", "192.0.2.1"), ("X-Forwarded-For", allowed_ip)]
    for method, path in surfaces:
        response = send(server, method, path, honest, source="127.0.0.2")
        assert response.status_code in (200, 204), (path, response.text)
    # audit entries record the same address
    created = send(server, "POST", "/api/v1/tokens", honest, source="127.0.0.2",
                   json={"name": "made via proxy", "expires_in_days": 7})
    assert created.status_code == 201, created.text
    entries = admin(server, "GET", "/api/v1/audit",
                    params={"target_id": created.json()["id"]}).json()["items"]
    assert entries and {entry["ip"] for entry in entries} == {allowed_ip}
