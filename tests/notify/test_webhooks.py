"""Signed webhooks delivered to a real HTTP receiver through the outbox, with retries."""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from tallykey.actor import Actor
from tallykey.clock import FrozenClock
from tallykey.errors import (
    KeyConfigError,
    PermissionDenied,
    SignatureInvalid,
    TamperedCiphertext,
    ValidationFailed,
)
from tallykey.keys.vault import open_value
from tallykey.notify import webhooks
from tallykey.notify.models import WebhookEndpoint
from tallykey.notify.webhooks import (
    WebhookChannel,
    WebhookService,
    secret_aad,
    sign,
    verify_signature,
)
from tallykey.runtime import Runtime
from tallykey.settings import Settings
from tallykey.tokens.format import TOKEN_PATTERN
from tallykey.tokens.requests import TokenChanges, TokenDraft

from ..conftest import World
from .conftest import HttpReceiver, make_worker, outbox_rows


def add_endpoint(world: World, url: str) -> str:
    _, secret = world.rt.webhooks.add(Actor.operator(world.acme_id), url)
    return secret


def test_token_events_are_signed_and_delivered(world: World, clock: FrozenClock,
                                               http_receiver: HttpReceiver) -> None:
    secret = add_endpoint(world, http_receiver.url)
    assert secret.startswith("whsec_") and len(secret) > 40
    rt = world.rt
    issued = rt.tokens.issue(world.as_admin, TokenDraft(name="CRM", expires_in_days=30,
                                                        scopes=["employees:read"]))
    rt.tokens.update(world.as_admin, issued.token.id, TokenChanges(name="CRM sync"))
    rotated = rt.tokens.rotate(world.as_admin, issued.token.id)
    rt.tokens.revoke(world.as_admin, issued.token.id)
    worker = make_worker(rt, None)  # webhooks go out even without SMTP
    assert worker.run_once().sent == 4
    assert worker.run_once().sent == 0

    order = ["token.created", "token.updated", "token.rotated", "token.revoked"]
    # Delivery order is not guaranteed (retries reorder anyway): receivers use occurred_at.
    requests = sorted(http_receiver.requests,
                      key=lambda r: order.index(r.headers["Tallykey-Event"]))
    assert [r.headers["Tallykey-Event"] for r in requests] == order
    for request in requests:
        assert request.path == "/hooks/tallykey"
        assert request.headers["Content-Type"] == "application/json"
        verify_signature(secret, request.headers["Tallykey-Signature"], request.body,
                         clock.now())
        body = request.body.decode()
        for leaked in (issued.value, rotated.value, issued.secret.secret):
            assert leaked not in body
        assert TOKEN_PATTERN.search(body) is None
    created = json.loads(requests[0].body)
    assert created["type"] == "token.created"
    assert created["data"]["token"]["prefix"] == issued.token.prefix
    assert created["data"]["actor"] == {"type": "user", "id": world.admin.id,
                                        "label": "admin@acme.test", "ip": "198.51.100.7"}
    assert json.loads(requests[1].body)["data"]["details"]["name"] == ["CRM", "CRM sync"]
    deliveries = {r.headers["Tallykey-Delivery"] for r in requests}
    assert deliveries == {row.id for row in outbox_rows(rt) if row.channel == "webhook"}


def test_expiring_and_expired_events(world: World, clock: FrozenClock,
                                     http_receiver: HttpReceiver) -> None:
    add_endpoint(world, http_receiver.url)
    token = world.rt.tokens.issue(world.as_member, TokenDraft(name="Sheet",
                                                              expires_in_days=30)).token
    worker = make_worker(world.rt, None)
    for moment in (token.expires_at - timedelta(days=6), token.expires_at - timedelta(days=1),
                   token.expires_at + timedelta(hours=2)):
        clock.set(moment)
        worker.run_once()
    events = [json.loads(r.body) for r in http_receiver.requests]
    events.sort(key=lambda e: (e["occurred_at"], e["type"] != "token.created"))
    assert [(e["type"], e["data"]["details"].get("days_before")) for e in events] == [
        ("token.created", None), ("token.expiring", 7), ("token.expiring", 2),
        ("token.expired", None)]
    assert events[1]["data"]["actor"] is None


def test_failed_deliveries_are_retried_then_succeed_once(
        world: World, clock: FrozenClock, http_receiver: HttpReceiver) -> None:
    secret = add_endpoint(world, http_receiver.url)
    world.rt.tokens.issue(world.as_admin, TokenDraft(name="CRM", expires_in_days=30,
                                                     scopes=["employees:read"]))
    worker = make_worker(world.rt, None)
    http_receiver.status = 503
    assert worker.run_once().retrying == 1
    [row] = [r for r in outbox_rows(world.rt) if r.channel == "webhook"]
    assert (row.status, row.last_error) == ("pending", "HTTP 503")
    http_receiver.status = 204
    clock.advance(timedelta(minutes=1))
    assert worker.run_once().sent == 1
    assert len(http_receiver.requests) == 2
    first, second = http_receiver.requests
    assert first.headers["Tallykey-Delivery"] == second.headers["Tallykey-Delivery"]
    # Each attempt is signed afresh with its own timestamp.
    assert first.headers["Tallykey-Signature"] != second.headers["Tallykey-Signature"]
    verify_signature(secret, second.headers["Tallykey-Signature"], second.body, clock.now())


def test_a_disabled_endpoint_gets_nothing_more(world: World,
                                               http_receiver: HttpReceiver) -> None:
    endpoint, _ = world.rt.webhooks.add(Actor.operator(world.acme_id), http_receiver.url)
    world.rt.tokens.issue(world.as_admin, TokenDraft(name="CRM", expires_in_days=30,
                                                     scopes=["employees:read"]))
    world.rt.webhooks.disable(Actor.operator(world.acme_id), endpoint.id)
    report = make_worker(world.rt, None).run_once()
    assert report.dead == 1 and http_receiver.requests == []
    world.rt.tokens.issue(world.as_admin, TokenDraft(name="Other", expires_in_days=30,
                                                     scopes=["employees:read"]))
    assert [r.channel for r in outbox_rows(world.rt)].count("webhook") == 1


def test_other_accounts_endpoints_are_not_called(world: World,
                                                 http_receiver: HttpReceiver) -> None:
    world.rt.webhooks.add(Actor.operator(world.globex_id), http_receiver.url)
    world.rt.tokens.issue(world.as_admin, TokenDraft(name="CRM", expires_in_days=30,
                                                     scopes=["employees:read"]))
    make_worker(world.rt, None).run_once()
    assert http_receiver.requests == []


def test_endpoint_management_is_for_admins_with_valid_urls(world: World) -> None:
    with pytest.raises(PermissionDenied):
        world.rt.webhooks.add(world.as_member, "https://hooks.acme.test/x")
    for bad in ("ftp://hooks.acme.test/", "hooks.acme.test/x", "https:///path"):
        with pytest.raises(ValidationFailed, match="http"):
            world.rt.webhooks.add(Actor.operator(world.acme_id), bad)


def test_verify_signature_refuses_tampering_staleness_and_garbage(clock: FrozenClock) -> None:
    now = clock.now()
    body = '{"type":"token.created"}'
    header = sign("whsec_key", body, int(now.timestamp()))
    verify_signature("whsec_key", header, body, now)
    verify_signature("whsec_key", header, body, now + timedelta(seconds=299))
    cases = [
        ("whsec_key", header, body + " ", now, "does not match"),
        ("whsec_other", header, body, now, "does not match"),
        ("whsec_key", header, body, now + timedelta(minutes=10), "seconds away"),
        ("whsec_key", "v1=abc", body, now, "t="),
        ("whsec_key", f"t={int(now.timestamp())}", body, now, "v1="),
    ]
    for secret, value, text, moment, reason in cases:
        with pytest.raises(SignatureInvalid, match=reason):
            verify_signature(secret, value, text, moment)


def test_private_targets_are_refused_unless_the_operator_allows_them(
        world: World, clock: FrozenClock, http_receiver: HttpReceiver) -> None:
    strict = WebhookService(world.rt.database, clock)
    operator = Actor.operator(world.acme_id)
    for target in ("http://127.0.0.1:5432/", "http://169.254.169.254/latest/meta-data",
                   "http://[::1]:8080/", "http://localhost./x", "https://10.1.2.3/hook",
                   "http://[::ffff:127.0.0.1]/", "http://0.0.0.0:80/", "http://[fe80::1]/"):
        with pytest.raises(ValidationFailed) as refused:
            strict.add(operator, target)
        assert "TALLYKEY_WEBHOOK_PRIVATE_TARGETS" in refused.value.hint, target
    assert strict.add(operator, "https://hooks.example.com/tallykey")[0].active
    # a name that resolves to a private address is refused when the delivery is made
    local_name = http_receiver.url.replace("127.0.0.1", "localhost")
    world.rt.webhooks.add(operator, local_name)  # this runtime allows private targets
    world.rt.tokens.issue(world.as_admin, TokenDraft(name="CRM", expires_in_days=30,
                                                     scopes=["employees:read"]))
    worker = make_worker(world.rt, None, private_webhook_targets=False)
    worker.run_once()
    assert http_receiver.requests == []
    failed = [row for row in outbox_rows(world.rt) if row.recipient.startswith(
        local_name.split("/hooks")[0])]
    assert failed and all("non-public" in (row.last_error or "") for row in failed)
    assert all(row.status == "dead" for row in failed)


def test_the_delivery_id_is_signed_and_query_strings_stay_hidden(
        world: World, clock: FrozenClock, http_receiver: HttpReceiver) -> None:
    secret = add_endpoint(world, http_receiver.url + "?key=receiver-credential")
    world.rt.tokens.issue(world.as_admin, TokenDraft(name="CRM", expires_in_days=30,
                                                     scopes=["employees:read"]))
    assert make_worker(world.rt, None).run_once().sent == 1
    [request] = http_receiver.requests
    assert request.path == "/hooks/tallykey?key=receiver-credential"
    delivery = request.headers["Tallykey-Delivery"]
    signature = request.headers["Tallykey-Signature"]
    assert f"d={delivery}," in signature
    verify_signature(secret, signature, request.body, clock.now(), delivery=delivery)
    with pytest.raises(SignatureInvalid):  # the body replayed as another delivery
        verify_signature(secret, signature, request.body, clock.now(),
                         delivery=delivery[:-1] + ("0" if delivery[-1] != "0" else "1"))
    forged = signature.replace(f"d={delivery}", "d=another-delivery")
    with pytest.raises(SignatureInvalid):
        verify_signature(secret, forged, request.body, clock.now(),
                         delivery="another-delivery")
    rows = [row for row in outbox_rows(world.rt) if row.channel == "webhook"]
    assert rows and all("receiver-credential" not in row.recipient for row in rows)


def test_signing_secrets_are_sealed_under_the_kek_and_resealed_by_key_rotation(
        settings: Settings, clock: FrozenClock, http_receiver: HttpReceiver) -> None:
    old = "old:" + base64.b64encode(os.urandom(32)).decode()
    new = "new:" + base64.b64encode(os.urandom(32)).decode()
    plain_rt = Runtime.build(settings, clock)  # no key: kept as it is (as before)
    world = World(plain_rt)
    operator = Actor.operator(world.acme_id)
    legacy, legacy_secret = plain_rt.webhooks.add(operator, http_receiver.url)
    plain_rt.close()

    keyed = Runtime.build(settings.model_copy(update={"kek": old}), clock)
    try:
        sealed, sealed_secret = keyed.webhooks.add(operator, http_receiver.url)
        with keyed.database.reading() as session:
            stored = {e.id: e for e in session.scalars(select(WebhookEndpoint))}
        assert stored[legacy.id].secret == legacy_secret
        assert stored[sealed.id].secret.startswith("kek:old:")
        assert sealed_secret not in stored[sealed.id].secret
        with pytest.raises(TamperedCiphertext):  # moved onto another endpoint: refused
            open_value(keyed.vault.keyring if keyed.vault else None,
                       stored[sealed.id].secret, secret_aad(legacy.id))
        keyed.check_keys()
        keyed.tokens.issue(world.as_admin, TokenDraft(name="one", expires_in_days=30))
        assert make_worker(keyed, None).run_once().sent == 2
    finally:
        keyed.close()
    by_url = {}
    for request in http_receiver.requests:
        for endpoint, secret in ((legacy, legacy_secret), (sealed, sealed_secret)):
            try:
                verify_signature(secret, request.headers["Tallykey-Signature"], request.body,
                                 clock.now())
                by_url[endpoint.id] = True
            except SignatureInvalid:
                pass
    assert by_url == {legacy.id: True, sealed.id: True}

    # without the key configured, tallykey refuses to start
    bare = Runtime.build(settings, clock)
    try:
        with pytest.raises(KeyConfigError, match="Webhook signing secrets are sealed"):
            bare.check_keys()
    finally:
        bare.close()

    # `tallykey keys rotate`: every secret, plain ones too, sealed under the new key
    rotated = Runtime.build(settings.model_copy(update={"kek": f"{new},{old}"}), clock)
    try:
        assert rotated.webhooks.reseal() == 2
        assert rotated.webhooks.reseal() == 0
        with rotated.database.reading() as session:
            assert all(e.secret.startswith("kek:new:")
                       for e in session.scalars(select(WebhookEndpoint)))
    finally:
        rotated.close()
    only_new = Runtime.build(settings.model_copy(update={"kek": new}), clock)
    try:
        only_new.check_keys()
        only_new.tokens.issue(world.as_admin, TokenDraft(name="two", expires_in_days=30))
        assert make_worker(only_new, None).run_once().sent == 2
    finally:
        only_new.close()
    latest = http_receiver.requests[-2:]
    verified = 0
    for request in latest:
        for secret in (legacy_secret, sealed_secret):
            try:
                verify_signature(secret, request.headers["Tallykey-Signature"],
                                 request.body, clock.now())
                verified += 1
            except SignatureInvalid:
                pass
    assert verified == 2


def test_a_name_rebound_to_a_private_address_after_the_check_is_not_followed(
        world: World, clock: FrozenClock, http_receiver: HttpReceiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Red team (#31): the delivery checked the name's addresses, then let the HTTP client
    resolve the name again — a DNS-rebinding name (public for the check, 127.0.0.1 a
    moment later) reached loopback services. The delivery now connects to the address it
    checked, naming the host in `Host` (and in TLS, SNI and the certificate check).

    No rebinding DNS server runs here: the resolver stands in for one (public answer
    first, loopback after), and 127.0.0.2 stands in for a public address (nothing
    listens there, and it is not the receiver's 127.0.0.1)."""
    real_getaddrinfo = socket.getaddrinfo
    asked: list[str] = []

    def rebinding(host: object, port: object, *args: object, **kwargs: object) -> object:
        if host == "rebind.example":
            asked.append(str(host))
            host = "127.0.0.2" if len(asked) == 1 else "127.0.0.1"
        return real_getaddrinfo(host, port, *args, **kwargs)  # type: ignore[arg-type]

    real_is_public = webhooks._is_public
    monkeypatch.setattr(webhooks, "_is_public",
                        lambda address: address == "127.0.0.2" or real_is_public(address))
    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    port = http_receiver.url.split(":")[2].split("/")[0]
    world.rt.webhooks.add(Actor.operator(world.acme_id),
                          f"http://rebind.example:{port}/hooks/tallykey")
    world.rt.tokens.issue(world.as_admin, TokenDraft(name="CRM", expires_in_days=30,
                                                     scopes=["employees:read"]))
    worker = make_worker(world.rt, None, private_webhook_targets=False)
    worker.run_once()
    assert http_receiver.requests == []  # loopback was never reached
    assert asked == ["rebind.example"]  # resolved once, for the check
    [row] = [r for r in outbox_rows(world.rt) if r.channel == "webhook"]
    assert row.status != "sent" and "ConnectError" in (row.last_error or "")


def test_a_pinned_https_delivery_checks_the_certificate_against_the_name(
        world: World, clock: FrozenClock, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The address is pinned, the name still rules TLS: a real HTTPS receiver whose
    certificate names `hooks.example` gets the delivery (SNI and the certificate check use
    the name, `Host` carries it); one whose certificate names another host is refused.
    The resolver stands in for DNS, 127.0.0.2 for a public address, as above."""
    real_getaddrinfo = socket.getaddrinfo

    def resolver(host: object, port: object, *args: object, **kwargs: object) -> object:
        if host in ("hooks.example", "other.example"):
            host = "127.0.0.2"
        return real_getaddrinfo(host, port, *args, **kwargs)  # type: ignore[arg-type]

    real_is_public = webhooks._is_public
    monkeypatch.setattr(webhooks, "_is_public",
                        lambda address: address == "127.0.0.2" or real_is_public(address))
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    cert_file, key_file = _certificate_for("hooks.example", tmp_path)
    receiver = HttpReceiver()
    receiver.server.server_close()
    handler = receiver.server.RequestHandlerClass
    handler.protocol_version = "HTTP/1.1"  # type: ignore[attr-defined]  # keep-alive
    server = ThreadingHTTPServer(("127.0.0.2", 0), handler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_file, key_file)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        operator = Actor.operator(world.acme_id)
        good, _ = world.rt.webhooks.add(operator, f"https://hooks.example:{port}/in")
        wrong, _ = world.rt.webhooks.add(operator, f"https://other.example:{port}/in")
        world.rt.tokens.issue(world.as_admin, TokenDraft(name="CRM", expires_in_days=30,
                                                         scopes=["employees:read"]))
        # the channel's own client, trusting the test's certificate: it keeps no
        # connection alive, so a connection pinned for one name (the pool knows addresses
        # only) never carries a delivery to another name past its certificate check
        client = webhooks.delivery_client(
            verify=ssl.create_default_context(cafile=str(cert_file)))
        channel = WebhookChannel(world.rt.database, clock, client, allow_private=False)
        make_worker(world.rt, None, webhooks=channel).run_once()
        [request] = receiver.requests
        assert request.path == "/in"
        assert request.headers["Host"] == f"hooks.example:{port}"
        rows = {r.endpoint_id: r for r in outbox_rows(world.rt) if r.channel == "webhook"}
        assert rows[good.id].status == "sent"
        assert rows[wrong.id].status != "sent"
        assert "CERTIFICATE_VERIFY_FAILED" in (rows[wrong.id].last_error or "")
    finally:
        server.shutdown()
        server.server_close()


def _certificate_for(name: str, folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_changing_the_url_to_a_private_address_is_refused_and_changes_nothing(
        world: World, clock: FrozenClock) -> None:
    """Red team (#31), held: PATCH checks a new URL as adding does (loopback, cloud
    metadata, a mapped IPv6 loopback): a clear 422 and the endpoint keeps its URL."""
    strict = WebhookService(world.rt.database, clock)
    operator = Actor.operator(world.acme_id)
    endpoint, _ = strict.add(operator, "https://hooks.example.com/tallykey")
    for target in ("http://127.0.0.1:6379/", "http://169.254.169.254/latest/meta-data",
                   "http://[::ffff:10.0.0.1]/", "http://localhost/x"):
        with pytest.raises(ValidationFailed) as refused:
            strict.update(operator, endpoint.id, url=target)
        assert refused.value.details["field"] == "url", target
    assert strict.get(operator, endpoint.id).url == "https://hooks.example.com/tallykey"
