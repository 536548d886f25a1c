"""Mail delivery over real SMTP with the standard library.

`TALLYKEY_SMTP_URL` is `smtp://[user:password@]host[:port]` (STARTTLS whenever the server
offers it) or `smtps://…` (TLS from the first byte). Credentials are only ever sent over
TLS, except to a loopback relay. The password never appears in a log line or an error.
"""

from __future__ import annotations

import ipaddress
import smtplib
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import unquote, urlsplit

from tallykey.errors import DeliveryError
from tallykey.notify.models import OutboxMessage

DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    implicit_tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def parse(cls, url: str) -> SmtpConfig:
        """Read `TALLYKEY_SMTP_URL`; `ValueError` (without the password) if malformed."""
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError:
            raise ValueError("TALLYKEY_SMTP_URL is malformed; expected "
                             "smtp://user:password@host:587 or smtps://host:465") from None
        if parts.scheme not in DEFAULT_PORTS:
            raise ValueError(f"TALLYKEY_SMTP_URL must start with smtp:// or smtps://, "
                             f"not {parts.scheme or 'nothing'}://")
        if not parts.hostname:
            raise ValueError("TALLYKEY_SMTP_URL names no host, e.g. smtp://mail.example.com:587")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("TALLYKEY_SMTP_URL takes no path or query: "
                             "smtp://user:password@host:port")
        return cls(
            host=parts.hostname,
            port=port or DEFAULT_PORTS[parts.scheme],
            implicit_tls=parts.scheme == "smtps",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def describe(self) -> str:
        """host:port and TLS mode, for logs and status lines (never the credentials)."""
        return f"{'smtps' if self.implicit_tls else 'smtp'}://{self.host}:{self.port}"


class SmtpMailer:
    """Sends outbox mails over one SMTP connection per batch."""

    def __init__(self, config: SmtpConfig, mail_from: str,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.config = config
        self.mail_from = mail_from
        self.ssl_context = ssl_context or ssl.create_default_context()

    def compose(self, message: OutboxMessage) -> EmailMessage:
        """The RFC 5322 message for an outbox row: text with an HTML alternative."""
        mail = EmailMessage()
        mail["From"] = self.mail_from
        mail["To"] = message.recipient
        mail["Subject"] = message.subject
        mail["Date"] = format_datetime(message.created_at)
        # Stable per row: a repeat after a crash can be recognised by the receiver.
        domain = self.mail_from.rpartition("@")[2].strip("> ") or "tallykey.invalid"
        mail["Message-ID"] = f"<{message.id}@{domain}>"
        mail["Auto-Submitted"] = "auto-generated"
        mail["X-Tallykey-Event"] = message.event
        mail.set_content(message.body)
        if message.html_body:
            mail.add_alternative(message.html_body, subtype="html")
        return mail

    def deliver(self, messages: Sequence[OutboxMessage]
                ) -> Iterator[tuple[OutboxMessage, DeliveryError | None]]:
        if not messages:
            return
        try:
            connection = self._connect()
        except (OSError, smtplib.SMTPException, DeliveryError) as error:
            failure = _as_delivery_error(error, f"cannot reach {self.config.describe()}")
            for message in messages:
                yield message, failure
            return
        try:
            for position, message in enumerate(messages):
                try:
                    connection.send_message(self.compose(message))
                except smtplib.SMTPServerDisconnected as error:
                    yield message, _as_delivery_error(error, "server disconnected")
                    for rest in messages[position + 1:]:
                        yield rest, DeliveryError("server disconnected before sending")
                    return
                except (OSError, smtplib.SMTPException, ValueError) as error:
                    yield message, _as_delivery_error(error, "refused")
                else:
                    yield message, None
        finally:
            try:
                connection.quit()
            except (OSError, smtplib.SMTPException):
                connection.close()

    def _connect(self) -> smtplib.SMTP:
        config = self.config
        connection: smtplib.SMTP
        if config.implicit_tls:
            connection = smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout,
                                          context=self.ssl_context)
        else:
            connection = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
        try:
            connection.ehlo()
            tls = config.implicit_tls
            if not tls and connection.has_extn("starttls"):
                connection.starttls(context=self.ssl_context)
                connection.ehlo()
                tls = True
            if config.username:
                if not tls and not config.is_loopback:
                    raise DeliveryError(f"{config.describe()} offers no STARTTLS; refusing to "
                                        "send the SMTP password in clear text (use smtps://)")
                connection.login(config.username, config.password or "")
        except BaseException:
            connection.close()
            raise
        return connection


def _as_delivery_error(error: BaseException, context: str) -> DeliveryError:
    """A short, secret-free description; a 5xx refusal of the recipient or content is
    permanent, everything else (network, 4xx, authentication) is worth retrying."""
    if isinstance(error, DeliveryError):
        return error
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in error.recipients.values()]
        return DeliveryError(f"recipient refused ({', '.join(map(str, codes))})",
                             permanent=bool(codes) and all(code >= 500 for code in codes))
    if isinstance(error, smtplib.SMTPAuthenticationError):
        return DeliveryError(f"SMTP login refused ({error.smtp_code})")
    if isinstance(error, smtplib.SMTPDataError | smtplib.SMTPSenderRefused):
        text = error.smtp_error.decode(errors="replace")[:200] if isinstance(
            error.smtp_error, bytes) else str(error.smtp_error)[:200]
        # A refused sender is a configuration problem affecting every mail: retry.
        permanent = isinstance(error, smtplib.SMTPDataError) and error.smtp_code >= 500
        return DeliveryError(f"{context}: {error.smtp_code} {text}", permanent=permanent)
    if isinstance(error, ValueError) and not isinstance(error, OSError):
        # An address the email package cannot encode. (A failed certificate check is a
        # ValueError too, but also an OSError: a configuration problem, retried below.)
        return DeliveryError(f"malformed message: {error}"[:200], permanent=True)
    return DeliveryError(f"{context}: {error.__class__.__name__}: {error}"[:300])
