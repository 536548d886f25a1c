"""The in-process verification cache: bounded, with a short TTL, and evicted by token,
or wholesale on user/account changes, from the change feed.

The bound (`TALLYKEY_CACHE_MAX_TOKENS`) evicts the entry loaded first (FIFO, O(1): a
queue of keys beside the dict). Eviction only ever forces a miss: the next request for an
evicted token loads it from the store again, so a revoked token can never pass because
its entry was evicted."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
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
    on the same string needs no checksum again. Reads take no lock and write nothing
    (dict reads are atomic in CPython); loads and evictions take the lock. When full, the
    entry loaded first goes (`_order`, a queue of keys: O(1), where taking the dict's first
    key would scan the holes its earlier evictions left).
    """

    def __init__(self, size: int = DEFAULT_SIZE, negative_size: int = DEFAULT_NEGATIVE_SIZE,
                 ttl: float = DEFAULT_TTL_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic,
                 allow: Callable[[TokenRecord], Verdict] = allowed_verdict) -> None:
        #: The most tokens' entries held (`TALLYKEY_CACHE_MAX_TOKENS`).
        self.size = max(1, size)
        self.negative_size = negative_size
        self.ttl = ttl
        self._monotonic = monotonic
        #: Makes a record's ready-made "allowed" verdict (the verifier adds rate limits).
        self._allow = allow
        self._positive: dict[bytes, Entry] = {}
        #: Keys of `_positive` in the order they were loaded; a key evicted otherwise
        #: (by token, or loaded again later) may linger here and is skipped.
        self._order: deque[bytes] = deque()
        self._negative: OrderedDict[bytes, float] = OrderedDict()
        #: A token's keys: one key as is, several (a rotated secret in its grace period)
        #: as a tuple; a set per token would cost four times as much.
        self._by_token: dict[str, bytes | tuple[bytes, ...]] = {}
        self._lock = threading.Lock()
        self.generation = 0
        #: Entries evicted to keep within `size` (for metrics).
        self.evictions = 0

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
            if key not in self._positive:
                while len(self._positive) >= self.size:
                    self._evict_oldest()
                self._order.append(key)
                if len(self._order) > 2 * self.size + 64:
                    self._compact()
            self._positive[key] = entry
            token_id = record.token_id
            keys = self._by_token.get(token_id)
            if keys is None:
                self._by_token[token_id] = key
            elif isinstance(keys, bytes):
                if keys != key:
                    self._by_token[token_id] = (keys, key)
            elif key not in keys:
                self._by_token[token_id] = (*keys, key)
        return entry

    def put_unknown(self, key: bytes, generation: int) -> None:
        with self._lock:
            if generation != self.generation:
                return
            if key not in self._negative and len(self._negative) >= self.negative_size:
                self._negative.popitem(last=False)
            self._negative[key] = self._monotonic()

    def evict_token(self, token_id: str) -> None:
        with self._lock:
            self.generation += 1
            for key in _keys(self._by_token.pop(token_id, ())):
                self._positive.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._positive.clear()
            self._order.clear()
            self._by_token.clear()
            self._negative.clear()

    def __len__(self) -> int:
        return len(self._positive)

    def _evict_oldest(self) -> None:
        """Evict the entry loaded first (called with the lock held, the cache full)."""
        while True:
            key = self._order.popleft()
            found = self._positive.pop(key, None)
            if found is not None:
                break
        self.evictions += 1
        token_id = found[1].token_id
        others = tuple(k for k in _keys(self._by_token.pop(token_id, ())) if k != key)
        if others:
            self._by_token[token_id] = others[0] if len(others) == 1 else others

    def _compact(self) -> None:
        """Drop the keys `_order` holds for entries no longer cached, and repeats (the
        first place kept): amortised O(1), as it runs once per `size` loads at most."""
        positive = self._positive
        self._order = deque(dict.fromkeys(k for k in self._order if k in positive))


def _keys(keys: bytes | tuple[bytes, ...]) -> tuple[bytes, ...]:
    return (keys,) if isinstance(keys, bytes) else keys
