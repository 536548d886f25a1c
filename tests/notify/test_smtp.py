"""SMTP settings and transport security, against a real aiosmtpd server with a
self-signed certificate (STARTTLS and implicit TLS) and password login."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tallykey.notify.smtp import SmtpConfig, SmtpMailer
from tallykey.tokens.requests import TokenDraft

from ..conftest import World
from .conftest import MAIL_FROM, Recorder, SmtpServer, free_port, make_worker, outbox_rows


def test_parse_smtp_url() -> None:
    config = SmtpConfig.parse("smtp://mailer%40acme:p%40ss:w0rd@mail.acme.test:587")
    assert (config.host, config.port, config.implicit_tls) == ("mail.acme.test", 587, False)
    assert (config.username, config.password) == ("mailer@acme", "p@ss:w0rd")
    assert "p@ss" not in repr(config) and "p@ss" not in config.describe()
    assert SmtpConfig.parse("smtps://mail.acme.test").port == 465
    assert SmtpConfig.parse("smtp://mail.acme.test").port == 25
    assert SmtpConfig.parse("smtp://127.0.0.1:2525").is_loopback
    assert not SmtpConfig.parse("smtp://mail.acme.test").is_loopback


@pytest.mark.parametrize(("url", "message"), [
    ("http://mail.acme.test", "must start with smtp:// or smtps://"),
    ("mail.acme.test:25", "must start with smtp://"),
    ("smtp://user:secretpw@", "names no host"),
    ("smtp://user:secretpw@mail.acme.test:port", "malformed"),
    ("smtp://user:secretpw@mail.acme.test/inbox", "no path or query"),
])
def test_bad_smtp_urls_are_explained_without_the_password(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        SmtpConfig.parse(url)
    assert "secretpw" not in str(caught.value)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                 auth_data: Any) -> AuthResult:
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == b"mailer"
          and auth_data.password == b"s3cret pass")
    return AuthResult(success=ok, handled=False, auth_data=b"mailer" if ok else None)


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[SmtpServer]:
    """STARTTLS required, then password login required."""
    server = SmtpServer("127.0.0.1", free_port(), Recorder(), extra={
        "tls_context": server_context(certificate), "require_starttls": True,
        "authenticator": authenticate, "auth_required": True})
    server.start()
    yield server
    server.stop()


def test_starttls_and_login(world: World, tls_server: SmtpServer,
                            certificate: tuple[Path, Path]) -> None:
    config = SmtpConfig.parse(f"smtp://mailer:s3cret%20pass@127.0.0.1:{tls_server.port}")
    mailer = SmtpMailer(config, MAIL_FROM, ssl_context=client_context(certificate))
    world.rt.tokens.issue(world.as_admin, TokenDraft(name="CRM", expires_in_days=30,
                                                     scopes=["employees:read"]))
    worker = make_worker(world.rt, None)
    worker.channels["email"] = mailer
    assert worker.run_once().sent == 1
    [received] = tls_server.received
    assert received.tls and received.login == "mailer"


def test_a_wrong_password_is_retried_and_never_logged(
        world: World, tls_server: SmtpServer, certificate: tuple[Path, Path],
        caplog: pytest.LogCaptureFixture) -> None:
    config = SmtpConfig.parse(f"smtp://mailer:wrong-horse@127.0.0.1:{tls_server.port}")
    mailer = SmtpMailer(config, MAIL_FROM, ssl_context=client_context(certificate))
    world.rt.tokens.issue(world.as_admin, TokenDraft(name="CRM", expires_in_days=30,
                                                     scopes=["employees:read"]))
    worker = make_worker(world.rt, None)
    worker.channels["email"] = mailer
    with caplog.at_level("DEBUG"):
        assert worker.run_once().retrying == 1
    [row] = outbox_rows(world.rt)
    assert row.last_error == "SMTP login refused (535)"
    assert "wrong-horse" not in caplog.text
    assert tls_server.received == []


def test_an_untrusted_certificate_is_refused(world: World, tls_server: SmtpServer) -> None:
    mailer = SmtpMailer(SmtpConfig.parse(f"smtp://127.0.0.1:{tls_server.port}"), MAIL_FROM)
    world.rt.tokens.issue(world.as_admin, TokenDraft(name="CRM", expires_in_days=30,
                                                     scopes=["employees:read"]))
    worker = make_worker(world.rt, None)
    worker.channels["email"] = mailer
    assert worker.run_once().retrying == 1
    [row] = outbox_rows(world.rt)
    assert "SSLCertVerificationError" in (row.last_error or "")


def test_implicit_tls(world: World, certificate: tuple[Path, Path]) -> None:
    server = SmtpServer("127.0.0.1", free_port(), Recorder(),
                        extra={"ssl_context": server_context(certificate)})
    server.start()
    try:
        mailer = SmtpMailer(SmtpConfig.parse(f"smtps://127.0.0.1:{server.port}"), MAIL_FROM,
                            ssl_context=client_context(certificate))
        world.rt.tokens.issue(world.as_admin, TokenDraft(name="CRM", expires_in_days=30,
                                                         scopes=["employees:read"]))
        worker = make_worker(world.rt, None)
        # The server speaks TLS from the first byte: plain SMTP cannot talk to it.
        plain = replace(SmtpConfig.parse(f"smtp://127.0.0.1:{server.port}"), timeout=1.0)
        worker.channels["email"] = SmtpMailer(plain, MAIL_FROM)
        assert worker.run_once().retrying == 1
        world.rt.clock.advance(timedelta(minutes=1))  # type: ignore[attr-defined]
        worker.channels["email"] = mailer
        assert worker.run_once().sent == 1
        assert len(server.received) == 1
    finally:
        server.stop()
