"""The in-process verification cache: bounded, with a short TTL as the fallback, and
evicted by token, or wholesale on user/account changes, from the change feed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from tallykey.auth.record import TokenRecord
from tallykey.auth.verdict import Verdict

DEFAULT_SIZE = 100_000
DEFAULT_NEGATIVE_SIZE = 10_000
DEFAULT_TTL_SECONDS = 5.0

#: A cached token: when it was loaded, the record, and its ready-made "allowed" verdict.
Entry = tuple[float, TokenRecord, Verdict]


def allowed_verdict(record: TokenRecord) -> Verdict:
    return Verdict(
        allowed=True, status=200, token_id=record.token_id, account_id=record.account_id,
        account=record.account_slug, kind=record.kind, scopes=record.scopes,
        workspaces=record.workspaces, owner_id=record.owner_id,
        owner_email=record.owner_email, expires_at=record.expires_at)


class VerificationCache:
    """Maps secret hash -> entry (positive) or "unknown" (negative).

    Only hashes of strings that passed the offline checksum are ever stored, so a later hit
    on the same string needs no checksum again. Reads take no lock (dict reads are atomic
    in CPython); writes and evictions do. When full, the oldest entry goes first.
    """

    def __init__(self, size: int = DEFAULT_SIZE, negative_size: int = DEFAULT_NEGATIVE_SIZE,
                 ttl: float = DEFAULT_TTL_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.negative_size = negative_size
        self.ttl = ttl
        self._monotonic = monotonic
        self._positive: dict[str, Entry] = {}
        self._negative: dict[str, float] = {}
        self._by_token: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self.generation = 0

    def get(self, secret_hash: str) -> Entry | None:
        entry = self._positive.get(secret_hash)
        if entry is None or self._monotonic() - entry[0] > self.ttl:
            return None
        return entry

    def known_unknown(self, secret_hash: str) -> bool:
        stamp = self._negative.get(secret_hash)
        return stamp is not None and self._monotonic() - stamp <= self.ttl

    def put(self, secret_hash: str, record: TokenRecord, generation: int) -> Entry:
        """Store a record loaded while the cache was at `generation`; a record loaded
        before an eviction that happened meanwhile is not kept (it may be stale)."""
        entry = (self._monotonic(), record, allowed_verdict(record))
        with self._lock:
            if generation != self.generation:
                return entry
            if secret_hash not in self._positive and len(self._positive) >= self.size:
                self._evict_oldest()
            self._positive[secret_hash] = entry
            self._by_token.setdefault(record.token_id, set()).add(secret_hash)
        return entry

    def put_unknown(self, secret_hash: str, generation: int) -> None:
        with self._lock:
            if generation != self.generation:
                return
            if len(self._negative) >= self.negative_size:
                self._negative.pop(next(iter(self._negative)))
            self._negative[secret_hash] = self._monotonic()

    def evict_token(self, token_id: str) -> None:
        with self._lock:
            self.generation += 1
            for secret_hash in self._by_token.pop(token_id, ()):
                self._positive.pop(secret_hash, None)

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._positive.clear()
            self._by_token.clear()
            self._negative.clear()

    def __len__(self) -> int:
        return len(self._positive)

    def _evict_oldest(self) -> None:
        secret_hash = next(iter(self._positive))
        record = self._positive.pop(secret_hash)[1]
        hashes = self._by_token.get(record.token_id)
        if hashes is not None:
            hashes.discard(secret_hash)
            if not hashes:
                del self._by_token[record.token_id]
