"""`POST /api/v1/leaks` end to end: signed GitHub-style reports revoke live tokens at once,
label each entry, and a bad signature changes nothing."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tallykey.tokens import format as token_format

from .conftest import Server, manage, new_token, running_server

KEY_ID = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a"
LEAK_URL = "https://github.com/octo/repo/blob/abc123/.env"


@pytest.fixture(scope="module")
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           signing_key: ec.EllipticCurvePrivateKey) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(f"leaks-{request.param}")
    public = signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    keys = tmp / "github-secret-scanning-keys.json"
    keys.write_text(json.dumps({"public_keys": [
        {"key_identifier": KEY_ID, "key": public, "is_current": True}]}))
    with running_server(tmp, request.param, TALLYKEY_LEAK_REPORT_KEYS=str(keys)) as live:
        yield live


def entry(token: str, url: str = LEAK_URL) -> dict[str, str]:
    return {"token": token, "type": "tallykey_api_token", "url": url, "source": "content"}


def report(server: Server, key: ec.EllipticCurvePrivateKey, entries: Any,
           headers: dict[str, str] | None = None, tamper: bytes = b"") -> httpx.Response:
    body = json.dumps(entries).encode()
    signature = base64.b64encode(key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()
    sent = {"Github-Public-Key-Identifier": KEY_ID, "Github-Public-Key-Signature": signature,
            "Content-Type": "application/json", **(headers or {})}
    return httpx.post(f"{server.base_url}/api/v1/leaks", content=body + tamper,
                      headers={k: v for k, v in sent.items() if v}, timeout=15)






def info_status(server: Server, token: str) -> int:
    return httpx.get(f"{server.base_url}/core/v3/info", timeout=10,
                     headers={"Authorization": f"Bearer {token}"}).status_code


def audit(server: Server, token_id: str, action: str) -> list[dict[str, Any]]:
    response = manage(server, "GET", "/api/v1/audit",
                     params={"target_id": token_id, "action": action})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def test_a_reported_live_token_is_revoked_at_once(
        server: Server, signing_key: ec.EllipticCurvePrivateKey) -> None:
    made = new_token(server)
    assert info_status(server, made["token"]) == 200
    response = report(server, signing_key, [entry(made["token"])])
    assert response.status_code == 200, response.text
    assert response.json() == [{"token_raw": made["token"], "token_type": "tallykey_api_token",
                                "label": "true_positive"}]
    refused = httpx.get(f"{server.base_url}/core/v3/info", timeout=10,
                        headers={"Authorization": f"Bearer {made['token']}"})
    assert refused.status_code == 401 and "revoked" in refused.json()["message"]
    revoked = audit(server, made["id"], "token.revoked")
    assert revoked[0]["details"]["reason"] == f"reported leaked: {LEAK_URL}"
    assert revoked[0]["actor_type"] == "operator"
    reported = audit(server, made["id"], "token.leak_reported")
    assert reported[0]["details"]["url"] == LEAK_URL
    assert reported[0]["details"]["source"] == "content"
    assert reported[0]["details"]["outcome"] == "revoked"
    shown = manage(server, "GET", f"/api/v1/tokens/{made['id']}").json()
    assert shown["status"] == "revoked"
    # the notification outbox tells the token's creator, naming the leak, never the secret
    listed = json.loads(server.cli("outbox", "list", "--account", server.seeded["account"],
                                   "--json").stdout)
    mails = [m for m in listed if m["channel"] == "email" and "revoked" in m["event"]
             and m["recipient"] == server.seeded["admin"]["email"]]
    bodies = [server.cli("outbox", "show", m["id"], "--json").stdout for m in mails]
    leak_mails = [b for b in bodies if LEAK_URL in json.loads(b)["body"]]
    assert leak_mails and all(made["token"] not in b for b in bodies)
    assert "Secret scanning" in json.loads(leak_mails[0])["body"]


def test_every_entry_is_labelled_in_order(
        server: Server, signing_key: ec.EllipticCurvePrivateKey) -> None:
    live = new_token(server)
    revoked = new_token(server)
    assert manage(server, "DELETE", f"/api/v1/tokens/{revoked['id']}").status_code == 200
    expiring = new_token(server)
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    assert manage(server, "PATCH", f"/api/v1/tokens/{expiring['id']}",
                 json={"expires_at": soon}).status_code == 200
    rotated = new_token(server)
    renewed = manage(server, "POST", f"/api/v1/tokens/{rotated['id']}/rotate",
                    json={"grace_seconds": 0})
    assert renewed.status_code == 200, renewed.text
    time.sleep(1.5)
    flipped = live["token"][:-1] + ("A" if live["token"][-1] != "A" else "B")
    cases = [
        (live["token"], "true_positive"),
        (revoked["token"], "true_positive"),
        (expiring["token"], "true_positive"),
        (rotated["token"], "true_positive"),  # its old secret, already retired
        (str(token_format.generate("eu1")), "false_positive"),  # well formed, unknown
        (str(token_format.generate("us1")), "false_positive"),  # another deployment's
        (live["token"][:50], "false_positive"),
        (flipped, "false_positive"),
        ("ghp_" + "a" * 36, "false_positive"),
        ("", "false_positive"),
    ]
    payload = [entry(token) for token, _ in cases]
    payload[-1]["token"] = " "
    response = report(server, signing_key, payload)
    assert response.status_code == 200, response.text
    labels = response.json()
    assert [item["label"] for item in labels] == [label for _, label in cases]
    assert [item["token_raw"] for item in labels] == [item["token"] for item in payload]
    assert info_status(server, live["token"]) == 401
    assert info_status(server, renewed.json()["token"]) == 200  # retired secret: no revoke
    outcomes = {t["id"]: audit(server, t["id"], "token.leak_reported")[0]["details"]["outcome"]
                for t in (live, revoked, expiring, rotated)}
    assert outcomes == {live["id"]: "revoked", revoked["id"]: "already_revoked",
                        expiring["id"]: "expired", rotated["id"]: "secret_retired"}


def test_bad_or_missing_signatures_change_nothing(
        server: Server, signing_key: ec.EllipticCurvePrivateKey) -> None:
    made = new_token(server)
    stranger = ec.generate_private_key(ec.SECP256R1())
    attempts = [
        (stranger, {}, b"", 401, "does not match"),
        (signing_key, {}, b" ", 401, "does not match"),
        (signing_key, {"Github-Public-Key-Identifier": "someone-else"}, b"", 401,
         "unknown key"),
        (signing_key, {"Github-Public-Key-Identifier": ""}, b"", 400, "Identifier header"),
        (signing_key, {"Github-Public-Key-Signature": ""}, b"", 400, "Signature header"),
        (signing_key, {"Github-Public-Key-Signature": "@@@"}, b"", 400, "base64"),
    ]
    for key, headers, tamper, status, fragment in attempts:
        response = report(server, key, [entry(made["token"])], headers, tamper)
        assert response.status_code == status, (fragment, response.text)
        assert fragment in response.json()["message"]
    assert info_status(server, made["token"]) == 200
    assert audit(server, made["id"], "token.leak_reported") == []


def test_malformed_reports_are_refused_whole(
        server: Server, signing_key: ec.EllipticCurvePrivateKey) -> None:
    made = new_token(server)
    bad: list[Any] = [
        {"token": made["token"]},
        [entry(made["token"]), {"type": "x"}],
        [entry(made["token"]), "a string"],
        [{**entry(made["token"]), "token": 12}],
    ]
    for payload in bad:
        response = report(server, signing_key, payload)
        assert response.status_code == 422, response.text
        assert "Nothing was revoked" in response.json()["hint"]
    assert report(server, signing_key, [entry("x")] * 1001).status_code == 413
    huge = report(server, signing_key, [entry("x" * 4000)] * 80)
    assert huge.status_code == 413 and "larger than" in huge.json()["message"]
    assert info_status(server, made["token"]) == 200
    assert report(server, signing_key, []).json() == []


def test_tokens_never_reach_the_log(server: Server,
                                    signing_key: ec.EllipticCurvePrivateKey) -> None:
    made = new_token(server)
    assert report(server, signing_key, [entry(made["token"])]).status_code == 200
    log = server.log_path.read_text()
    assert made["token"] not in log and made["token"][-20:] not in log
    assert "leaked token reported" in log


def test_a_valid_report_revokes_whatever_its_url_holds(
        server: Server, signing_key: ec.EllipticCurvePrivateKey) -> None:
    """The url is the reporter's free text: a token in it (often the leaked one), control
    characters or bidi overrides must never turn a valid report into a 422."""
    bystander = new_token(server)["token"]
    hostile_urls = ["https://gist.example/raw?t={token}", "https://x.example/\x00\x1b[31m",
                    "https://x.example/a\nb\u202e", f"https://x.example/{bystander}"]
    for url in hostile_urls:
        made = new_token(server)
        response = report(server, signing_key, [entry(made["token"],
                                                      url.replace("{token}", made["token"]))])
        assert response.status_code == 200, (url[:30], response.text)
        assert response.json()[0]["label"] == "true_positive"
        assert info_status(server, made["token"]) == 401
        revoked = audit(server, made["id"], "token.revoked")
        reported = audit(server, made["id"], "token.leak_reported")
        kept = revoked[0]["details"]["reason"] + reported[0]["details"]["url"]
        assert made["token"] not in kept and bystander not in kept and "\x00" not in kept
        assert reported[0]["details"]["outcome"] == "revoked"
