"""The notification tests' real SMTP server (aiosmtpd), for the governance mails."""

from ..notify.conftest import smtp_port, smtp_server

__all__ = ["smtp_port", "smtp_server"]
