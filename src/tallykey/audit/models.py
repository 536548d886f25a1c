"""The audit tables. Entries are only ever inserted, each linked to the one before it in
its chain by a SHA-256 hash (`audit.chain`), so an edited, deleted or reordered row is
detected by `tallykey audit verify`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tallykey.db.base import Base, UTCDateTime


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_account_at", "account_id", "occurred_at"),
                      UniqueConstraint("chain", "seq", name="uq_audit_events_chain_seq"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id"), nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    action: Mapped[str] = mapped_column(String(64))
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    actor_label: Mapped[str] = mapped_column(String(254), default="")
    target_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    target_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    ip: Mapped[str | None] = mapped_column(String(45), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: The chain the entry belongs to: its account id, or `-` for account-less entries.
    #: Set by `audit.chain` at flush time, like `seq`, `prev_hash` and `hash`.
    chain: Mapped[str] = mapped_column(String(36))
    #: Position in the chain, from 1.
    seq: Mapped[int] = mapped_column(Integer)
    prev_hash: Mapped[str] = mapped_column(String(64))
    #: SHA-256 (hex) over `prev_hash` and the entry's canonical JSON.
    hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(Base):
    """The newest entry of each chain. Appending locks this row (`FOR UPDATE`), so
    concurrent writers on any number of nodes append one after the other; comparing it
    with the last entry reveals deleted trailing entries."""

    __tablename__ = "audit_chain_heads"

    chain: Mapped[str] = mapped_column(String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
