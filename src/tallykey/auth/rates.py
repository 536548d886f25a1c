"""Rate limits per token (SPEC §13): fixed windows of `per_seconds`, counted per bucket
(the token's own, its owner's, its external id's, or its identity's: SPEC §16).

Without Redis a node counts in process: exact on one node. With Redis
(`TALLYKEY_REDIS_URL`) a node leases blocks of allowances from a shared counter
(`auth.redis_link`) and spends them locally, so a token far from its limit costs no round
trip on most requests; the block shrinks with what is left (1/16 of it), and the last 16
of a window are leased one at a time: near its limit a token is counted exactly. Leases
never add up to more than the limit, so all nodes together admit at most `limit`
requests per window. While Redis cannot be reached, `TALLYKEY_REDIS_FAILURE=open` counts
each node's requests against the whole limit on its own, `closed` answers 503.

The bound in `open` mode, exactly: in any one window, all nodes together admit at most
nodes x limit, whenever Redis fails or comes back. Each node admits at most `limit` in a
window whatever the mode (`Bucket.used`), and when Redis answers again a node first
adds what it admitted on its own in that window to the shared count (`carry`), so the
nodes do not lease a second full limit on top of it.

`admit` never blocks: it answers from local state, or says that a lease is needed
(`NEEDS_LEASE`), which `admit_remote` takes (a network call, off the event loop).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from tallykey.auth.record import TokenRecord
from tallykey.auth.redis_link import RedisLink
from tallykey.controls.rules import IDENTITY_SHARED, RateRule
from tallykey.errors import RateLimited, StoreUnavailable, TallykeyError
from tallykey.tokens.models import APPLICATION

MAX_BUCKETS = 100_000


class _NeedsLease:
    def __repr__(self) -> str:
        return "NEEDS_LEASE"


#: `admit` cannot decide without Redis: call `admit_remote` (off the event loop).
NEEDS_LEASE: Final = _NeedsLease()


class Bucket:
    """One counter in its current window: the local count (no Redis, or Redis down and
    failing open), or the allowances leased from Redis and the shared count seen."""

    __slots__ = ("count", "ends", "full", "key", "lease", "local", "seen", "used", "window")

    def __init__(self, key: str) -> None:
        self.key = key
        self.window = -1.0
        self.ends = 0.0
        #: Admitted on this node's own count (no Redis, or Redis away), not yet added to
        #: the shared count.
        self.count = 0
        #: Everything this node admitted in the window (it never admits more than the
        #: limit in a window: the nodes x limit bound while Redis is away).
        self.used = 0
        self.lease = 0
        self.seen = 0
        self.full = False
        self.local = True

    def roll(self, window: float, per_seconds: int) -> None:
        """Start window `window` (`now // per_seconds`) if it is later than the current
        one (a request that started in the previous window counts in this one)."""
        if window > self.window:
            self.window = window
            self.ends = (window + 1) * per_seconds
            self.count = self.used = self.lease = self.seen = 0
            self.full = False

    def remaining(self, limit: int) -> int:
        if self.local:
            return max(0, limit - self.used)
        return 0 if self.full else max(0, limit - self.seen + self.lease)


@dataclass(frozen=True, slots=True)
class RateLimitState:
    """One limit as a response reports it: `remaining` in the window ending in `reset`
    seconds."""

    name: str
    limit: int
    per_seconds: int
    remaining: int
    reset: int


class RateView:
    """A token's limits and their buckets: cached with its verdict, read when a response
    is built (so `RateLimit-Remaining` is the count at that moment on this node)."""

    __slots__ = ("buckets", "clock", "pairs", "rules")

    def __init__(self, rules: tuple[RateRule, ...], buckets: tuple[Bucket, ...],
                 clock: Callable[[], float]) -> None:
        self.rules = rules
        self.buckets = buckets
        self.pairs = tuple(zip(rules, buckets, strict=True))
        self.clock = clock

    def states(self) -> tuple[RateLimitState, ...]:
        now = self.clock()
        states = []
        for rule, bucket in self.pairs:
            window = now // rule.per_seconds
            current = bucket.window == window
            states.append(RateLimitState(
                rule.name, rule.limit, rule.per_seconds,
                bucket.remaining(rule.limit) if current else rule.limit,
                max(0, math.ceil((window + 1) * rule.per_seconds - now))))
        return tuple(states)

    def tightest(self) -> RateLimitState:
        states = self.states()
        if len(states) == 1:
            return states[0]
        return min(states, key=lambda state: (state.remaining, -state.reset))


class RateCounter:
    """Admits requests against rate limits: in process, or through Redis leases."""

    def __init__(self, link: RedisLink | None, fail_open: bool,
                 clock: Callable[[], float]) -> None:
        self.link = link
        self.fail_open = fail_open
        self.clock = clock
        self._buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()

    def view(self, record: TokenRecord) -> RateView | None:
        """The limits of `record` with their buckets (None without limits)."""
        if not record.rate_rules:
            return None
        with self._lock:
            buckets = tuple(self._bucket(_bucket_key(record, rule))
                            for rule in record.rate_rules)
        return RateView(record.rate_rules, buckets, self.clock)

    def admit(self, view: RateView, now: float) -> TallykeyError | _NeedsLease | None:
        """None (admitted and counted), the refusal, or `NEEDS_LEASE`. Never blocks."""
        with self._lock:
            return self._admit(view, now)

    def admit_remote(self, view: RateView, now: float) -> TallykeyError | None:
        """As `admit`, leasing from Redis what is missing: at most one bounded call per
        limit. Blocks: call it off the event loop."""
        assert self.link is not None
        taken: list[tuple[Bucket, float]] = []  # allowances this request holds
        refusal: TallykeyError | None = None
        for rule, bucket in view.pairs:
            with self._lock:
                bucket.roll(now // rule.per_seconds, rule.per_seconds)
                window = bucket.window
                if bucket.used >= rule.limit:  # this node's own share, whatever the mode
                    refusal = _limited(rule, bucket, now)
                    break
                if bucket.lease > 0 and bucket.count == 0:
                    bucket.lease -= 1
                    taken.append((bucket, window))
                    continue
                if bucket.full:
                    refusal = _limited(rule, bucket, now)
                    break
                carry = bucket.count
            answer = self.link.lease(f"tallykey:rate:{bucket.key}:{int(window)}", rule.limit,
                                     rule.per_seconds + 1, carry)
            with self._lock:
                if answer is None:  # Redis failed: undo, then count as configured
                    self._give_back(taken)
                    fallback = self._admit(view, now)  # the breaker is open: no lease asked
                    assert not isinstance(fallback, _NeedsLease)
                    return fallback
                granted, seen = answer
                current = bucket.window == window  # else the window ended meanwhile
                if current:
                    bucket.count = max(0, bucket.count - carry)  # now in the shared count
                    bucket.seen = max(bucket.seen, seen)
                    bucket.local = False
                if granted == 0:
                    bucket.full = bucket.full or current
                    refusal = _limited(rule, bucket, now)
                    break
                if current:
                    bucket.lease += granted - 1
                taken.append((bucket, window))
        with self._lock:
            if refusal is not None:
                self._give_back(taken)
            else:
                for bucket, window in taken:
                    if bucket.window == window:
                        bucket.used += 1
        return refusal

    def _give_back(self, taken: list[tuple[Bucket, float]]) -> None:
        """Return allowances a refused request held, to windows still current."""
        for bucket, window in taken:
            if bucket.window == window:
                bucket.lease += 1

    def _admit(self, view: RateView, now: float) -> TallykeyError | _NeedsLease | None:
        if self.link is None:  # in process: count here (the hot path, kept short)
            for rule, bucket in view.pairs:
                window = now // rule.per_seconds
                if window > bucket.window:
                    bucket.roll(window, rule.per_seconds)
                if bucket.used >= rule.limit:
                    return _limited(rule, bucket, now)
            for bucket in view.buckets:
                bucket.count += 1
                bucket.used += 1
            return None
        if not self.link.up():
            if not self.fail_open:
                return StoreUnavailable(
                    "The rate-limit store (Redis) cannot be reached, so this request cannot "
                    "be counted now.", "Try again in 1 second.", retry_after=1)
            for rule, bucket in view.pairs:  # fail open: each node counts alone
                bucket.roll(now // rule.per_seconds, rule.per_seconds)
                if bucket.used >= rule.limit:
                    return _limited(rule, bucket, now)
            for bucket in view.buckets:
                bucket.count += 1
                bucket.used += 1
                bucket.local = True
            return None
        for rule, bucket in view.pairs:
            bucket.roll(now // rule.per_seconds, rule.per_seconds)
            if bucket.used >= rule.limit:
                return _limited(rule, bucket, now)
            if bucket.lease <= 0 or bucket.count > 0:  # a lease granted meanwhile is
                # spent before "full"; what was admitted alone is carried first
                return _limited(rule, bucket, now) if bucket.full else NEEDS_LEASE
        for bucket in view.buckets:
            bucket.lease -= 1
            bucket.used += 1
            bucket.local = False
        return None

    def _bucket(self, key: str) -> Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._buckets.pop(next(iter(self._buckets)))
            bucket = self._buckets[key] = Bucket(key)
        return bucket


def _bucket_key(record: TokenRecord, rule: RateRule) -> str:
    """The counter a rule counts in. A token's own counter is its renewal chain's (a
    successor continues the window of the token it renews). An external id's counter is
    the account's for application tokens (which only administrators create); a personal
    token's external-id counter is its owner's alone, so a member cannot join, or drain,
    a customer's shared counter by naming its external id."""
    if rule.shared == IDENTITY_SHARED and record.identity_id is not None:
        scope = f"i:{record.identity_id}"
    elif rule.shared == "owner" and record.owner_id is not None:
        scope = f"o:{record.owner_id}"
    elif rule.shared == "external_id" and record.external_id is not None:
        scope = (f"x:{record.account_id}:{record.external_id}" if record.kind == APPLICATION
                 else f"xo:{record.owner_id}:{record.external_id}")
    else:  # the token's own count restarts when its limit changes (its own or its
        # plan's: SPEC §16), so no node spends allowances leased under the old limit
        return (f"t:{record.lineage_id or record.token_id}:{rule.name}:"
                f"{rule.limit}/{rule.per_seconds}")
    return f"{scope}:{rule.name}:{rule.per_seconds}"


def _limited(rule: RateRule, bucket: Bucket, now: float) -> RateLimited:
    retry_after = max(1, math.ceil(bucket.ends - now))
    shared = {"owner": " (shared by every token of its owner)",
              "external_id": " (shared by every token with its external id)",
              IDENTITY_SHARED: " (shared by every token of its identity)"}.get(
                  rule.shared or "", "")
    return RateLimited(
        f"This token's rate limit {rule.name!r} is reached: {rule.limit} requests per "
        f"{rule.per_seconds} seconds{shared}.",
        f"Wait {retry_after} seconds (Retry-After), or ask an administrator for a higher "
        "limit.", limit=rule.name, retry_after=retry_after)
