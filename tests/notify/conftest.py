"""Real receivers for the notification tests: an SMTP server (aiosmtpd) and an HTTP server
(http.server), both on 127.0.0.1 at a free port, each recording what it received."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from tallykey.jobs import Worker
from tallykey.notify.models import OutboxMessage
from tallykey.notify.smtp import SmtpConfig, SmtpMailer
from tallykey.runtime import Runtime
from tallykey.settings import Settings

MAIL_FROM = "tallykey@keys.acme.test"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def text_of(message: EmailMessage, subtype: str = "plain") -> str:
    """The decoded `text/<subtype>` body of a mail (which must have one)."""
    body = message.get_body((subtype,))
    assert body is not None, f"no text/{subtype} part"
    text: str = body.get_content()
    return text


@dataclass
class Received:
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    tls: bool = False
    login: str | None = None


class Recorder:
    """aiosmtpd handler: keeps every accepted message; refuses addresses in `refuse`."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.refuse: set[str] = set()
        self.lock = threading.Lock()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = bytes(envelope.content)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self.lock:
            login = session.auth_data if session.authenticated else None
            self.received.append(Received(
                list(envelope.rcpt_tos), parsed, raw, tls=session.ssl is not None,
                login=login.decode() if isinstance(login, bytes) else login))
        return "250 Message accepted"


@dataclass
class SmtpServer:
    host: str
    port: int
    recorder: Recorder
    controller: Controller | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    @property
    def received(self) -> list[Received]:
        with self.recorder.lock:
            return list(self.recorder.received)

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address in r.rcpt_tos]

    def start(self) -> None:
        assert self.controller is None
        self.controller = Controller(self.recorder, hostname=self.host, port=self.port,
                                     **self.extra)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
def smtp_server(smtp_port: int) -> Iterator[SmtpServer]:
    """A running SMTP server."""
    server = SmtpServer("127.0.0.1", smtp_port, Recorder())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def smtp_down(smtp_port: int) -> Iterator[SmtpServer]:
    """An SMTP server that is not running yet (connections are refused); `.start()` it."""
    server = SmtpServer("127.0.0.1", smtp_port, Recorder())
    yield server
    server.stop()


def make_worker(rt: Runtime, smtp: SmtpServer | None, **options: Any) -> Worker:
    mailer = SmtpMailer(SmtpConfig.parse(smtp.url), MAIL_FROM) if smtp else None
    options.setdefault("private_webhook_targets", rt.settings.webhook_private_targets)
    options.setdefault("keyring", rt.vault.keyring if rt.vault else None)
    return Worker(rt.database, rt.clock, notifier=rt.notifier, mailer=mailer, **options)


def outbox_rows(rt: Runtime) -> list[OutboxMessage]:
    with rt.database.reading() as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.created_at,
                                                                   OutboxMessage.recipient)))


@dataclass
class HttpRequest:
    path: str
    headers: dict[str, str]
    body: bytes


class HttpReceiver:
    """A real HTTP server that records POSTs and answers with `status`."""

    def __init__(self) -> None:
        self.requests: list[HttpRequest] = []
        self.status = 200
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.requests.append(HttpRequest(self.path, dict(self.headers), body))
                    status = receiver.status
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/tallykey"


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """The receivers here listen on localhost: private webhook targets are allowed."""
    return Settings(database_url=database_url, data_dir=tmp_path / "data", region="eu1",
                    webhook_private_targets=True)
