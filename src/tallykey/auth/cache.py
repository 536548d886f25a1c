"""The in-process verification cache: bounded, with a short TTL, and evicted by token,
or wholesale on user/account changes, from the change feed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from tallykey.auth.rates import RateView
from tallykey.auth.record import TokenRecord
from tallykey.auth.verdict import Verdict

DEFAULT_SIZE = 100_000
DEFAULT_NEGATIVE_SIZE = 10_000
DEFAULT_TTL_SECONDS = 5.0

#: A cached token: when it was loaded, the record, and its ready-made "allowed" verdict.
Entry = tuple[float, TokenRecord, Verdict]


def allowed_verdict(record: TokenRecord, rates: RateView | None = None) -> Verdict:
    return Verdict.allowing(
        token_id=record.token_id, account_id=record.account_id,
        account=record.account_slug, kind=record.kind, scopes=record.scopes,
        workspaces=record.workspaces, owner_id=record.owner_id,
        owner_email=record.owner_email, expires_at=record.expires_at,
        metadata=record.metadata, external_id=record.external_id, rates=rates,
        name=record.name, identity=record.identity)


class VerificationCache:
    """Maps a token's SHA-256 digest -> entry (positive) or "unknown" (negative).

    Only hashes of strings that passed the offline checksum are ever stored, so a later hit
    on the same string needs no checksum again. Reads take no lock (dict reads are atomic
    in CPython); writes and evictions do. When full, the oldest entry goes first.
    """

    def __init__(self, size: int = DEFAULT_SIZE, negative_size: int = DEFAULT_NEGATIVE_SIZE,
                 ttl: float = DEFAULT_TTL_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic,
                 allow: Callable[[TokenRecord], Verdict] = allowed_verdict) -> None:
        self.size = size
        self.negative_size = negative_size
        self.ttl = ttl
        self._monotonic = monotonic
        #: Makes a record's ready-made "allowed" verdict (the verifier adds rate limits).
        self._allow = allow
        self._positive: dict[bytes, Entry] = {}
        self._negative: dict[bytes, float] = {}
        self._by_token: dict[str, tuple[bytes, ...]] = {}  # tuples: a set per token costs 4x
        self._lock = threading.Lock()
        self.generation = 0

    def get(self, key: bytes) -> Entry | None:
        entry = self._positive.get(key)
        if entry is None or self._monotonic() - entry[0] > self.ttl:
            return None
        return entry

    def get_stale(self, key: bytes) -> Entry | None:
        """The entry whatever its age: while the store cannot be reached, a cached
        verdict outlives the TTL (the caller bounds it by TALLYKEY_STALE_IF_ERROR)."""
        return self._positive.get(key)

    def known_unknown(self, key: bytes) -> bool:
        stamp = self._negative.get(key)
        return stamp is not None and self._monotonic() - stamp <= self.ttl

    def put(self, key: bytes, record: TokenRecord, generation: int) -> Entry:
        """Store a record loaded while the cache was at `generation`; a record loaded
        before an eviction that happened meanwhile is not kept (it may be stale)."""
        entry = (self._monotonic(), record, self._allow(record))
        with self._lock:
            if generation != self.generation:
                return entry
            if key not in self._positive and len(self._positive) >= self.size:
                self._evict_oldest()
            self._positive[key] = entry
            keys = self._by_token.get(record.token_id, ())
            if key not in keys:
                self._by_token[record.token_id] = (*keys, key)
        return entry

    def put_unknown(self, key: bytes, generation: int) -> None:
        with self._lock:
            if generation != self.generation:
                return
            if len(self._negative) >= self.negative_size:
                self._negative.pop(next(iter(self._negative)))
            self._negative[key] = self._monotonic()

    def evict_token(self, token_id: str) -> None:
        with self._lock:
            self.generation += 1
            for key in self._by_token.pop(token_id, ()):
                self._positive.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._positive.clear()
            self._by_token.clear()
            self._negative.clear()

    def __len__(self) -> int:
        return len(self._positive)

    def _evict_oldest(self) -> None:
        key = next(iter(self._positive))
        record = self._positive.pop(key)[1]
        others = tuple(k for k in self._by_token.pop(record.token_id, ()) if k != key)
        if others:
            self._by_token[record.token_id] = others
