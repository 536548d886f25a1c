"""Per-account data keys, each stored wrapped by a key-encryption key (KEK) named by id."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from tallykey.db.base import Base, UTCDateTime


class AccountKey(Base):
    __tablename__ = "account_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    kek_id: Mapped[str] = mapped_column(String(64), index=True)
    #: nonce (12 bytes) + AES-GCM(KEK, data key) with the account and key id as AAD.
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    rewrapped_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
