"""Tables of notifications: the outbox (one row per mail or webhook call to make) and the
webhook endpoints an account has registered."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tallykey.db.base import Base, UTCDateTime, new_id

EMAIL = "email"
WEBHOOK = "webhook"
CHANNELS = (EMAIL, WEBHOOK)

PENDING = "pending"  # waiting for its first try, a retry, or for SMTP to be configured
SENDING = "sending"  # claimed by a worker until `lease_until`
SENT = "sent"
DEAD = "dead"  # gave up after the last attempt, or refused permanently
OUTBOX_STATUSES = (PENDING, SENDING, SENT, DEAD)


class OutboxMessage(Base):
    """One delivery to make. Inserted in the transaction of the change it reports, so it
    exists exactly when that change does; `dedupe_key` makes each notice unique."""

    __tablename__ = "outbox_messages"
    __table_args__ = (Index("ix_outbox_messages_due", "status", "next_attempt_at"),
                      Index("ix_outbox_messages_endpoint", "endpoint_id", "created_at"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    #: What happened, e.g. `token.created` or `token.expiring`.
    event: Mapped[str] = mapped_column(String(64))
    #: The notice this row belongs to, shared by its recipients (e.g. `reminder:<token>:2`).
    notice: Mapped[str] = mapped_column(String(200), index=True)
    #: `notice` plus the recipient: a second insert of the same delivery is ignored.
    dedupe_key: Mapped[str] = mapped_column(String(300), unique=True)
    token_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    #: An e-mail address, or the URL of a webhook endpoint.
    recipient: Mapped[str] = mapped_column(String(2048))
    endpoint_id: Mapped[str | None] = mapped_column(
        ForeignKey("webhook_endpoints.id"), nullable=True)
    subject: Mapped[str] = mapped_column(String(300), default="")
    #: The plain-text mail, or the webhook's JSON body (signed as stored).
    body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class WebhookEndpoint(Base):
    """A URL of an account that receives signed token events. The secret is the HMAC key,
    so it is kept retrievable (never hashed; sealed with AES-256-GCM under the key-encryption
    key when one is configured) — and never logged or shown after creation or rotation."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(500), default="", server_default="")
    #: The event types sent to this endpoint; empty means every type.
    events: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    #: Sealed under the key-encryption key when one is configured (`kek:<id>:…`).
    secret: Mapped[str] = mapped_column(String(255))
    #: The secret before the last rotation: it keeps signing beside `secret` until
    #: `secret_rotated_at` + the overlap (24 hours), so receivers can switch unhurried.
    previous_secret: Mapped[str | None] = mapped_column(String(255), nullable=True)
    secret_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: Deleted endpoints stay (their delivery history points at them) but are never
    #: listed, sent to, or changed again.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
