"""Idempotent issuance: a create or rotate sent twice with the same key issues one secret.

The API honours an `Idempotency-Key` header on create and rotate; the console puts a key
in each create and rotate form, so a double click, a reload or a re-posted form answers
with the first request's result instead of issuing (and announcing) a second secret.

A key is scoped to the account and the acting user. The first request claims it; a repeat
with the same request gets the first answer again; a repeat with a different request is
refused (`IdempotencyKeyReused`, 422); a repeat while the first is still running waits a
little, then is refused (`IdempotentRequestInProgress`, 409). A claim whose operation
failed is dropped, so the caller can correct the request and retry with the same key.

The first answer carries the token's secret. It is stored only sealed with AES-256-GCM
under a key derived (HKDF-SHA256) from the credential that made the request — the API
token or the console session cookie, neither of which the store keeps — so a replay
works only for the same credential and the store never holds a readable secret.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Integer, LargeBinary, String, UniqueConstraint, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from tallykey.clock import Clock
from tallykey.db.base import Base, UTCDateTime, new_id
from tallykey.db.engine import Database
from tallykey.errors import (
    IdempotencyKeyReused,
    IdempotentRequestInProgress,
    NotFound,
    ValidationFailed,
)

PENDING = "pending"
DONE = "done"
#: How long a key is remembered (Stripe: 24 hours).
KEPT_FOR = timedelta(hours=24)
#: How long a repeat waits for the first request to finish before answering 409.
WAIT_SECONDS = 5.0
MAX_KEY_LENGTH = 255
NONCE_BYTES = 12

T = TypeVar("T")


class IdempotentRequest(Base):
    """One claimed idempotency key and, once done, the sealed first answer."""

    __tablename__ = "idempotent_requests"
    __table_args__ = (UniqueConstraint("account_id", "actor", "key",
                                       name="uq_idempotent_requests_key"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(String(36), index=True)
    actor: Mapped[str] = mapped_column(String(80))
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH))
    operation: Mapped[str] = mapped_column(String(200))
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    token_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    revealed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


@dataclass(frozen=True)
class Claim:
    """A key this request holds: do the work, then `finish` (or `abandon` on failure)."""

    id: str


@dataclass(frozen=True)
class Replay:
    """The first answer to this key, for the same credential."""

    id: str
    status_code: int
    token_id: str | None
    #: None when the console's one-time view has shown it already.
    answer: dict[str, Any] | None


def fingerprint(operation: str, body: Any) -> str:
    """A stable digest of what was asked (operation and canonical JSON body)."""
    canonical = json.dumps([operation, body], sort_keys=True, separators=(",", ":"),
                           default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_key(key: str) -> str:
    """The key as given, or `ValidationFailed` naming what is wrong with it."""
    if not key or not key.strip():
        raise ValidationFailed("The Idempotency-Key header is empty.",
                               "Send a unique value per operation, e.g. a UUID.",
                               field="Idempotency-Key")
    if len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ValidationFailed(
            f"The Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters.",
            "Send a unique value per operation, e.g. a UUID.", field="Idempotency-Key")
    return key


def _cipher(credential: str, row_id: str) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=row_id.encode(),
               info=b"tallykey/idempotent-answer").derive(credential.encode())
    return AESGCM(key)


def _seal(credential: str, row_id: str, answer: dict[str, Any]) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    plaintext = json.dumps(answer, separators=(",", ":")).encode()
    return nonce + _cipher(credential, row_id).encrypt(nonce, plaintext, row_id.encode())


def _open(credential: str, row: IdempotentRequest) -> dict[str, Any] | None:
    if row.sealed is None:
        return None
    try:
        plaintext = _cipher(credential, row.id).decrypt(
            row.sealed[:NONCE_BYTES], row.sealed[NONCE_BYTES:], row.id.encode())
    except InvalidTag:
        return None
    answer: dict[str, Any] = json.loads(plaintext)
    return answer


class IdempotencyStore:
    """Claims, answers and replays of idempotency keys (one table, every node)."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self.database = database
        self.clock = clock

    def begin(self, account_id: str, actor: str, key: str, operation: str,
              digest: str, credential: str) -> Claim | Replay:
        """Claim `key` for this request, or return the first request's answer.

        Raises `IdempotencyKeyReused` when the key was used for a different request and
        `IdempotentRequestInProgress` when the first request is still running."""
        key = check_key(key)
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            claimed = self._claim(account_id, actor, key, operation, digest)
            if isinstance(claimed, Claim):
                return claimed
            row = claimed
            if row.operation != operation or row.fingerprint != digest:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was already used for a different request.",
                    "Send a new key for a new operation; repeat a request only unchanged.",
                    field="Idempotency-Key")
            if row.state == DONE and row.revealed_at is not None:
                return Replay(row.id, row.status_code or 200, row.token_id, None)
            if row.state == DONE:
                answer = _open(credential, row)
                if answer is None:
                    raise IdempotencyKeyReused(
                        "This Idempotency-Key was used with other credentials; its answer "
                        "holds a secret and is replayed only to the same credentials.",
                        "Repeat the request with the credentials of the first one, or use "
                        "a new key.", field="Idempotency-Key")
                return Replay(row.id, row.status_code or 200, row.token_id, answer)
            if time.monotonic() >= deadline:
                raise IdempotentRequestInProgress(
                    "A request with this Idempotency-Key is still being processed.",
                    "Wait a moment and repeat the request unchanged.")
            time.sleep(0.05)

    def _claim(self, account_id: str, actor: str, key: str, operation: str,
               digest: str) -> Claim | IdempotentRequest:
        now = self.clock.now()
        try:
            with self.database.transaction() as session:
                session.execute(delete(IdempotentRequest).where(
                    IdempotentRequest.account_id == account_id,
                    IdempotentRequest.expires_at <= now))
                row = IdempotentRequest(account_id=account_id, actor=actor, key=key,
                                        operation=operation, fingerprint=digest,
                                        state=PENDING, created_at=now,
                                        expires_at=now + KEPT_FOR)
                session.add(row)
                session.flush()
                return Claim(row.id)
        except IntegrityError:
            pass
        with self.database.reading() as session:
            existing = session.scalar(select(IdempotentRequest).where(
                IdempotentRequest.account_id == account_id,
                IdempotentRequest.actor == actor, IdempotentRequest.key == key))
        if existing is None:  # dropped between our insert and read: try again
            return self._claim(account_id, actor, key, operation, digest)
        return existing

    def finish(self, claim: Claim, credential: str, status_code: int,
               token_id: str | None, answer: dict[str, Any]) -> None:
        """Store the answer (sealed) so repeats get it."""
        with self.database.transaction() as session:
            row = session.get_one(IdempotentRequest, claim.id)
            row.state = DONE
            row.status_code = status_code
            row.token_id = token_id
            row.sealed = _seal(credential, row.id, answer)

    def run(self, claim: Claim, credential: str, work: Callable[[], T], status_code: int,
            answer: Callable[[T], tuple[str | None, dict[str, Any]]]) -> T:
        """The one way a claimed key's operation runs, on every surface: `work` once; if
        it raises, the key is given up (`abandon`) so a corrected request may use it;
        else `answer` of its result (the token id and the stored answer) is kept, sealed
        under `credential`, for every repeat."""
        try:
            done = work()
        except BaseException:
            self.abandon(claim)
            raise
        token_id, stored = answer(done)
        self.finish(claim, credential, status_code, token_id, stored)
        return done

    def abandon(self, claim: Claim) -> None:
        """The operation failed: forget the key so a corrected request may use it."""
        with self.database.transaction() as session:
            session.execute(delete(IdempotentRequest).where(IdempotentRequest.id == claim.id))

    def reveal(self, account_id: str, actor: str, request_id: str,
               credential: str) -> Replay | None:
        """The console's one-time view: the answer the first time it is asked for, None
        afterwards (shown already). `NotFound` for anyone else's or an unknown id."""
        with self.database.transaction() as session:
            row = session.scalar(select(IdempotentRequest).where(
                IdempotentRequest.id == request_id, IdempotentRequest.account_id == account_id,
                IdempotentRequest.actor == actor, IdempotentRequest.state == DONE
            ).with_for_update())
            if row is None:
                raise NotFound("This page is not available.",
                               "Open the token from the token list.")
            if row.revealed_at is not None:
                return None
            answer = _open(credential, row)
            if answer is None:  # another session of the same user: it cannot open it
                return None
            row.revealed_at = self.clock.now()
            # the secret is never needed again: only the fact that it was shown remains
            row.sealed = None
            return Replay(row.id, row.status_code or 200, row.token_id, answer)
