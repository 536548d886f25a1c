"""The feed's tables: the changes themselves and the nodes that follow them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from tallykey.db.base import Base, UTCDateTime


class VerdictChange(Base):
    """One change that can alter a verdict: a token (revoked, rotated, edited), a user
    (deactivated, demoted, regranted) or an account (policies). Verifiers read this feed.

    `tx` is the writing transaction's id on PostgreSQL (`pg_current_xact_id()`), so
    readers can follow commit order rather than id order (ids are handed out before
    commit, so a later id can commit first)."""

    __tablename__ = "verdict_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[str] = mapped_column(String(36))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    tx: Mapped[int | None] = mapped_column(BigInteger, index=True, nullable=True)


class Node(Base):
    """A live verifier (server node or embedded). Heartbeats (on the database's clock)
    say it is alive, and `lease_until` until when it may answer from its cache;
    `applied_change` is its position in the feed (see
    `feed.changes.position`); `synced_at` is when its last successful feed read began."""

    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    label: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    applied_change: Mapped[int] = mapped_column(BigInteger, default=0)
    #: PostgreSQL: the snapshot of its last feed read (`xmin:xmax:xip,…`).
    feed_snapshot: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: Until when (database clock) this node may answer from its cache: acknowledgements
    #: await or name every node whose lease has not ended (SPEC §10).
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True,
                                                         index=True)
    clock_offset_ms: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
