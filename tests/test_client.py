"""`tallykey.client` against a real server: every failure class and its message."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from tallykey import client as sdk
from tallykey.tokens import format as token_format

from .e2e.conftest import Server, free_port, manage, new_token, running_server

Failed = TypeVar("Failed", bound=sdk.ConnectFailed)

US1 = "https://api-us1.example.com"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("client"), "sqlite") as live:
        yield live


@pytest.fixture(scope="module")
def regions(server: Server) -> dict[str, str]:
    return {"eu1": server.base_url, "us1": US1}






def connect(token: str, regions: dict[str, str], **kwargs: Any) -> sdk.ConnectionInfo:
    scopes = kwargs.pop("required_scopes", ())
    with sdk.Client(token, regions=regions, **kwargs) as client:
        return client.connect(scopes)


def failure(kind: type[Failed], token: str, regions: dict[str, str],
            **kwargs: Any) -> Failed:
    with pytest.raises(kind) as caught:
        connect(token, regions, **kwargs)
    assert token not in str(caught.value) and token not in repr(caught.value.as_dict())
    return caught.value


def test_connect_reports_account_token_scopes_expiry_and_user(
        server: Server, regions: dict[str, str]) -> None:
    info = connect(server.seeded["admin"]["token"], regions, region="eu1")
    assert info.account.slug == server.seeded["account"]
    assert info.account.region == "eu1" and info.base_url == server.base_url
    assert info.kind == "personal" and "tokens:manage" in info.scopes
    assert info.user is not None and info.user.email == server.seeded["admin"]["email"]
    assert info.expires_at > datetime.now(UTC) + timedelta(days=20)
    assert info.as_dict()["ok"] is True


def test_async_client_connects_the_same(server: Server, regions: dict[str, str]) -> None:
    async def run() -> sdk.ConnectionInfo:
        async with sdk.AsyncClient(server.seeded["member"]["token"], region="eu1",
                                   regions=regions) as client:
            return await client.connect(["employees:read"])

    # a thread of its own: an event loop left running in this one (e.g. by sync
    # Playwright in the browser tests) must not matter
    with ThreadPoolExecutor(1) as pool:
        info = pool.submit(asyncio.run, run()).result()
    assert info.scopes == ("employees:read",)
    assert info.user is not None and info.user.email == server.seeded["member"]["email"]


def test_region_defaults_to_the_tokens_own_and_base_url_overrides_the_map(
        server: Server) -> None:
    token = server.seeded["admin"]["token"]
    assert connect(token, {"eu1": server.base_url}).account.region == "eu1"
    info = connect(token, {}, base_url=server.base_url + "/")
    assert info.base_url == server.base_url


def test_truncated_or_altered_token_is_refused_offline(regions: dict[str, str],
                                                       server: Server) -> None:
    token = server.seeded["admin"]["token"]
    nowhere = {"eu1": "http://127.0.0.1:1"}  # never contacted
    cut = failure(sdk.TokenMalformed, token[:40], nowhere, region="eu1")
    assert "copied incompletely" in cut.message and cut.exit_code == 21
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert "copied incompletely" in failure(sdk.TokenMalformed, flipped, nowhere).message
    assert "whitespace" in failure(sdk.TokenMalformed, token[:20] + " " + token[20:],
                                   nowhere).message


def test_token_of_another_region_names_that_region_and_its_url(
        server: Server, regions: dict[str, str]) -> None:
    offline = failure(sdk.WrongRegion, server.seeded["admin"]["token"], regions, region="us1")
    assert offline.region == "eu1" and offline.base_url == server.base_url
    assert "'eu1'" in offline.message and server.base_url in offline.hint
    # the server says the same when the region check is bypassed with a base URL
    foreign = str(token_format.generate("us1"))
    online = failure(sdk.WrongRegion, foreign, regions, base_url=server.base_url)
    assert online.status == 401 and online.region == "us1" and online.base_url == US1
    assert US1 in online.hint


def test_unknown_token_says_check_it_was_not_deleted(server: Server,
                                                     regions: dict[str, str]) -> None:
    error = failure(sdk.TokenNotRecognised, str(token_format.generate("eu1")), regions)
    assert "not recognised" in error.message and "deleted" in error.hint
    assert error.exit_code == 23


def test_revoked_token_says_when(server: Server, regions: dict[str, str]) -> None:
    made = new_token(server)
    revoked = manage(server, "POST", f"/api/v1/tokens/{made['id']}/revoke", json={})
    assert revoked.status_code == 200, revoked.text
    error = failure(sdk.TokenRevoked, made["token"], regions)
    assert isinstance(error.revoked_at, datetime)
    assert error.revoked_at.isoformat() in error.message and "revoked" in error.message


def test_expired_token_says_when(server: Server, regions: dict[str, str]) -> None:
    made = new_token(server)
    soon = datetime.now(UTC) + timedelta(seconds=1.5)
    patched = manage(server, "PATCH", f"/api/v1/tokens/{made['id']}",
                     json={"expires_at": soon.isoformat()})
    assert patched.status_code == 200, patched.text
    time.sleep(2)
    error = failure(sdk.TokenExpired, made["token"], regions)
    assert error.expired_at is not None and abs(error.expired_at - soon) < timedelta(seconds=1)
    assert "Token Expired" in error.message


def test_deactivated_owner(server: Server, regions: dict[str, str]) -> None:
    account = server.seeded["account"]
    server.cli("users", "create", "-a", account, "--email", "leaver@demo.test", "--role",
               "admin")
    token = server.cli("tokens", "create", "-a", account, "--user", "leaver@demo.test",
                       "--name", "leaver", "--days", "7", "--quiet").stdout.strip()
    assert connect(token, regions).user is not None
    server.cli("users", "deactivate", "-a", account, "--email", "leaver@demo.test")
    deadline = time.monotonic() + 10
    while True:
        try:
            connect(token, regions)
        except sdk.TokenOwnerInactive as error:
            assert "no longer active" in error.message
            break
        assert time.monotonic() < deadline, "deactivation never reached the server"
        time.sleep(0.1)


def test_ip_not_allowed_shows_the_ip_seen(server: Server, regions: dict[str, str]) -> None:
    made = new_token(server, ip_allowlist=["203.0.113.0/24"])
    error = failure(sdk.IpNotAllowed, made["token"], regions)
    assert error.ip == "127.0.0.1" and "127.0.0.1" in error.message
    assert error.status == 403 and error.exit_code == 31


def test_required_scopes_are_checked(server: Server, regions: dict[str, str]) -> None:
    error = failure(sdk.ScopeMissing, server.seeded["member"]["token"], regions,
                    required_scopes=["employees:read", "employees:write"])
    assert error.scopes == ["employees:write"] and "employees:write" in error.message


def test_network_errors_name_the_url_tried(server: Server) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    error = failure(sdk.ServerUnreachable, server.seeded["admin"]["token"], {"eu1": dead})
    assert error.url == dead + "/core/v3/info" and error.url in error.message
    assert error.exit_code == 50


def test_something_that_is_not_tallykey_is_called_out(server: Server) -> None:
    error = failure(sdk.UnexpectedResponse, server.seeded["admin"]["token"], {},
                    base_url=server.base_url + "/elsewhere")
    assert error.status == 404 and "/elsewhere/core/v3/info" in (error.url or "")


def test_misconfiguration_is_reported_before_any_request(server: Server) -> None:
    token = str(token_format.generate("ap9"))
    error = failure(sdk.ClientMisconfigured, token, {"eu1": server.base_url})
    assert "'ap9'" in error.message and "eu1" in error.message
    assert "TALLYKEY_REGIONS" in error.hint
    bad_url = failure(sdk.ClientMisconfigured, server.seeded["admin"]["token"], {},
                      base_url="ftp://example.com")
    assert "http(s)" in bad_url.message


def test_region_map_comes_from_tallykey_regions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLYKEY_REGIONS", "eu1=https://api-eu1.example.com/,us1=https://u")
    assert sdk.region_map() == {"eu1": "https://api-eu1.example.com", "us1": "https://u"}
    monkeypatch.setenv("TALLYKEY_REGIONS", "eu1")
    with pytest.raises(sdk.ClientMisconfigured, match="region=url"):
        sdk.region_map()


def test_refusal_bodies_map_to_their_classes() -> None:
    url = "https://api-eu1.example.com/core/v3/info"
    limited = sdk.refusal(429, {"error": "too_many_attempts", "message": "m",
                                "retry_after": 42}, url)
    assert isinstance(limited, sdk.RateLimited) and limited.retry_after == 42
    assert isinstance(sdk.refusal(401, {"error": "invalid_token", "message": "m",
                                        "reason": "malformed"}, url), sdk.TokenMalformed)
    # the reason decides, never the message's wording
    assert isinstance(sdk.refusal(401, {"error": "invalid_token", "message": "owner gone",
                                        "reason": "revoked"}, url), sdk.TokenRevoked)
    assert isinstance(sdk.refusal(401, {"error": "invalid_token", "message": "m",
                                        "reason": "owner_inactive"}, url),
                      sdk.TokenOwnerInactive)
    unavailable = sdk.refusal(503, {"error": "store_unavailable", "message": "m",
                                    "reason": "store_unavailable"}, url, "2")
    assert isinstance(unavailable, sdk.ServiceUnavailable) and unavailable.retry_after == 2
    assert isinstance(sdk.refusal(403, {"error": "forbidden", "message": "m"}, url),
                      sdk.AccessDenied)
    assert isinstance(sdk.refusal(500, {"error": "internal_error", "message": "m"}, url),
                      sdk.UnexpectedResponse)


def test_the_client_never_shows_its_token(server: Server, regions: dict[str, str]) -> None:
    token = server.seeded["admin"]["token"]
    with sdk.Client(token, regions=regions) as client:
        assert token not in repr(client) and token not in str(client)


# --- verify() and tokens.* (SPEC §15) -------------------------------------------------------


def test_client_with_base_url_needs_no_region_map(server: Server,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Any) -> None:
    monkeypatch.delenv("TALLYKEY_REGIONS", raising=False)
    monkeypatch.setenv("TALLYKEY_DATA_DIR", str(tmp_path))  # no demo registered either
    token = server.seeded["admin"]["token"]
    with pytest.raises(sdk.ClientMisconfigured, match="none configured"):
        sdk.Client(token, region="eu1")
    with sdk.Client(token, region="eu1", base_url=server.base_url) as client:
        assert client.connect().account.region == "eu1"
    with sdk.Client(base_url=server.base_url, token=token) as client:
        assert client.region == "eu1" and client.tokens.list(limit=1)["items"]
    from tallykey import Client
    assert Client is sdk.Client


def test_verify_answers_who_a_valid_token_is(server: Server) -> None:
    made = new_token(server, name="orders service", scopes=["employees:read"],
                     metadata={"plan_tier": "gold"}, external_id="cust_42")
    with sdk.Client(base_url=server.base_url) as client:  # verify needs no token
        verdict = client.verify(made["token"], scopes=["employees:read"])
    assert verdict and verdict.valid and verdict.status == 200
    assert verdict.token_id == made["id"] and verdict.name == "orders service"
    assert verdict.kind == "personal" and verdict.scopes == ("employees:read",)
    assert verdict.account == server.seeded["account"]
    assert verdict.metadata == {"plan_tier": "gold"} and verdict.external_id == "cust_42"
    assert verdict.expires_at is not None and verdict.expires_at > datetime.now(UTC)
    assert all("employees:read" in held for held in verdict.workspaces.values())
    assert verdict.exception() is None


def test_verify_refusals_carry_reason_and_the_exception_of_the_table(server: Server) -> None:
    with sdk.Client(base_url=server.base_url) as client:
        missing = client.verify("")
        assert (missing.valid, missing.status, missing.reason) == (False, 401, "missing")
        assert isinstance(missing.exception(), sdk.TokenMissing)
        cut = client.verify(server.seeded["admin"]["token"][:30])
        assert cut.reason == "malformed" and "copied incompletely" in (cut.message or "")
        assert isinstance(cut.exception(), sdk.TokenMalformed)
        scoped = client.verify(server.seeded["member"]["token"], scopes="tokens:manage")
        assert (scoped.status, scoped.reason) == (403, "insufficient_scope")
        assert isinstance(scoped.exception(), sdk.ScopeMissing)
        elsewhere = client.verify(server.seeded["member"]["token"], workspace="nowhere")
        assert elsewhere.reason == "workspace_not_allowed"
        limited = new_token(server, rate_limits=[{"limit": 1, "per_seconds": 3600}])
        assert client.verify(limited["token"]).valid
        over = client.verify(limited["token"])
        assert (over.status, over.reason) == (429, "rate_limited")
        assert over.retry_after is not None and 0 < over.retry_after <= 3600
        error = over.exception()
        assert isinstance(error, sdk.RateLimited) and error.retry_after == over.retry_after
        metered = new_token(server, credits={"remaining": 1})
        assert client.verify(metered["token"]).credits_remaining == 0
        spent = client.verify(metered["token"])
        assert spent.reason == "usage_exhausted"
        assert isinstance(spent.exception(), sdk.UsageExhausted)
        assert metered["token"] not in repr(spent)


def test_an_overlong_secret_is_the_servers_own_400_verdict(server: Server) -> None:
    """Not a 422 `RequestRejected` past the verify API's 4096-character field limit."""
    with sdk.Client(base_url=server.base_url) as client:
        served = client.verify("x" * 2000)  # the server answers this one itself
        assert (served.status, served.reason, served.error) == (400, "malformed_header",
                                                                "invalid_request")
        for length in (2000, 5000, 100_000):
            local = client.verify("x" * length)
            assert local == sdk.Verification(**{
                **served.__dict__, "message": (served.message or "").replace(
                    "2007", str(length + 7))})
            assert isinstance(local.exception(), sdk.TokenMalformed)
            again = asyncio.run(_verify_async(server.base_url, "x" * length))
            assert again == local


async def _verify_async(base_url: str, secret: str) -> sdk.Verification:
    async with sdk.AsyncClient(base_url=base_url) as client:
        return await client.verify(secret)


def test_tokens_lifecycle_with_the_client(server: Server) -> None:
    with sdk.Client(base_url=server.base_url, token=server.seeded["admin"]["token"]) as tk:
        issued = tk.tokens.create(name="lifecycle", scopes=["employees:read"],
                                  expires_in_days=10, external_id="py-acme",
                                  idempotency_key="py-lifecycle-1")
        again = tk.tokens.create(name="lifecycle", scopes=["employees:read"],
                                 expires_in_days=10, external_id="py-acme",
                                 idempotency_key="py-lifecycle-1")
        assert again["id"] == issued["id"] and issued["token"].startswith("tlk_eu1_")
        assert [t["id"] for t in tk.tokens.list(external_id="py-acme")["items"]] == [
            issued["id"]]
        assert "token" not in tk.tokens.get(issued["id"])
        assert tk.tokens.update(issued["id"], name="renamed")["name"] == "renamed"
        rotated = tk.tokens.rotate(issued["id"], grace_seconds=0)
        assert tk.verify(rotated["token"]).valid
        assert tk.verify(issued["token"]).reason == "rotated_out"
        assert tk.tokens.suspend(issued["id"])["status"] == "suspended"
        assert tk.verify(rotated["token"]).reason == "suspended"
        assert tk.tokens.resume(issued["id"])["status"] == "active"
        renewed = tk.tokens.renew(issued["id"], expires_in_days=20, grace_seconds=0)
        assert renewed["renewed_from_id"] == issued["id"] and tk.verify(renewed["token"]).valid
        revoked = tk.tokens.revoke(renewed["id"], reason="done")
        assert revoked["status"] == "revoked" and revoked["propagation"]["complete"]
        assert tk.verify(renewed["token"]).reason == "revoked"


def test_identities_and_imported_keys_with_the_client(server: Server) -> None:
    """`client.identities` and `client.tokens.import_keys` (SPEC §16) on a real server:
    two keys of one identity spend its one pool; deleting it is refused while it has
    tokens, unless they are detached."""
    with sdk.Client(base_url=server.base_url, token=server.seeded["admin"]["token"]) as tk:
        made = tk.identities.create(external_id="py-cust", name="Py Customer",
                                    credits={"remaining": 2})
        assert tk.identities.get("py-cust")["id"] == made["id"]
        assert "py-cust" in [i["external_id"] for i in tk.identities.list()["items"]]
        key = "legacy_live_5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b"
        imported = tk.tokens.import_keys([{"key": key, "name": "legacy",
                                           "expires_in_days": 30, "identity_id": "py-cust"}])
        assert imported["created"] == 1
        native = tk.tokens.create(name="of py-cust", expires_in_days=10,
                                  identity_id=made["id"])
        assert [t["id"] for t in tk.tokens.list(identity_id="py-cust")["items"]] == [
            native["id"], imported["keys"][0]["id"]]
        assert [tk.verify(s).valid for s in (key, native["token"], key)] == [True, True, False]
        assert tk.identities.update(made["id"], credits={"remaining": 1}
                                    )["propagation"]["complete"]
        assert tk.verify(key).valid
        with pytest.raises(sdk.RequestRejected) as refused:
            tk.identities.delete(made["id"])
        assert refused.value.status == 409
        assert len(tk.identities.delete(made["id"], detach=True)["detached_tokens"]) == 2


def test_management_failures_raise_the_table_s_exceptions(server: Server) -> None:
    with sdk.Client(base_url=server.base_url, token=server.seeded["admin"]["token"]) as tk:
        with pytest.raises(sdk.RequestRejected) as unknown:
            tk.tokens.get("no-such-token")
        assert (unknown.value.status, unknown.value.error) == (404, "not_found")
        active = tk.tokens.create(name="active", expires_in_days=3)
        with pytest.raises(sdk.RequestRejected) as conflict:
            tk.tokens.resume(active["id"])
        assert (conflict.value.status, conflict.value.error) == (409, "conflict")
        with pytest.raises(sdk.RequestRejected, match="Unknown scope") as invalid:
            tk.tokens.create(name="x", scopes=["no:such"])
        assert invalid.value.status == 422 and "Known scopes" in invalid.value.hint
        revoked = tk.tokens.create(name="manager", scopes=["tokens:manage"], expires_in_days=3)
        tk.tokens.revoke(revoked["id"])
    with sdk.Client(base_url=server.base_url, token=revoked["token"]) as stranger:
        with pytest.raises(sdk.TokenRevoked) as refused:
            stranger.tokens.list()
        assert revoked["token"] not in str(refused.value)
        assert revoked["token"] not in repr(refused.value.as_dict())
    member = sdk.Client(base_url=server.base_url, token=server.seeded["member"]["token"])
    with member, pytest.raises(sdk.AccessDenied):
        member.tokens.create(name="nope")
    anonymous = sdk.Client(base_url=server.base_url)
    with anonymous, pytest.raises(sdk.ClientMisconfigured, match="needs a token"):
        anonymous.tokens.list()
    dead = f"http://127.0.0.1:{free_port()}"
    with sdk.Client(base_url=dead) as nowhere:
        with pytest.raises(sdk.ServerUnreachable) as unreachable:
            nowhere.verify("x")
        assert unreachable.value.url == dead + "/api/v1/verify"


def test_async_client_verifies_and_manages_the_same(server: Server) -> None:
    async def run() -> tuple[sdk.Verification, sdk.Verification, str]:
        async with sdk.AsyncClient(base_url=server.base_url,
                                   token=server.seeded["admin"]["token"]) as tk:
            issued = await tk.tokens.create(name="async", scopes=["employees:read"],
                                            expires_in_days=5)
            valid = await tk.verify(issued["token"], scopes=["employees:read"])
            await tk.tokens.suspend(issued["id"])
            refused = await tk.verify(issued["token"])
            listed = await tk.tokens.list(search="async")
            return valid, refused, listed["items"][0]["status"]

    with ThreadPoolExecutor(1) as pool:
        valid, refused, status = pool.submit(asyncio.run, run()).result()
    assert valid.valid and valid.name == "async"
    assert refused.reason == "suspended" and isinstance(refused.exception(),
                                                        sdk.TokenSuspended)
    assert status == "suspended"
