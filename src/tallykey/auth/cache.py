"""The in-process verification cache: bounded, with a short TTL as the fallback, and
evicted by token, or wholesale on user/account changes, from the change feed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from tallykey.auth.record import TokenRecord

DEFAULT_SIZE = 100_000
DEFAULT_NEGATIVE_SIZE = 10_000
DEFAULT_TTL_SECONDS = 5.0


class VerificationCache:
    """Maps secret hash -> `TokenRecord` (positive) or "unknown" (negative).

    Reads take no lock (dict reads are atomic in CPython); writes and evictions do.
    When full, the oldest entry goes first.
    """

    def __init__(self, size: int = DEFAULT_SIZE, negative_size: int = DEFAULT_NEGATIVE_SIZE,
                 ttl: float = DEFAULT_TTL_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.negative_size = negative_size
        self.ttl = ttl
        self._monotonic = monotonic
        self._positive: dict[str, tuple[float, TokenRecord]] = {}
        self._negative: dict[str, float] = {}
        self._by_token: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self.generation = 0

    def get(self, secret_hash: str) -> TokenRecord | None:
        entry = self._positive.get(secret_hash)
        if entry is None or self._monotonic() - entry[0] > self.ttl:
            return None
        return entry[1]

    def known_unknown(self, secret_hash: str) -> bool:
        stamp = self._negative.get(secret_hash)
        return stamp is not None and self._monotonic() - stamp <= self.ttl

    def put(self, secret_hash: str, record: TokenRecord, generation: int) -> None:
        """Store a record loaded while the cache was at `generation`; a record loaded
        before an eviction that happened meanwhile is dropped, never cached stale."""
        with self._lock:
            if generation != self.generation:
                return
            if secret_hash not in self._positive and len(self._positive) >= self.size:
                self._evict_oldest()
            self._positive[secret_hash] = (self._monotonic(), record)
            self._by_token.setdefault(record.token_id, set()).add(secret_hash)

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
        _, record = self._positive.pop(secret_hash)
        hashes = self._by_token.get(record.token_id)
        if hashes is not None:
            hashes.discard(secret_hash)
            if not hashes:
                del self._by_token[record.token_id]
