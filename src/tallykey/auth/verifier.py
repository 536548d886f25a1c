"""The verifier: decides in microseconds whether a request's credentials pass.

Hot path (cache hit): one regular expression on the header, SHA-256 of the token, one
dict lookup, a few comparisons, a counter increment. A miss costs one indexed query on a
raw connection (`auth.lookup`), run off the event loop by `averify`. No database write
per request: usage is aggregated in memory and flushed in batches. The node follows the
change feed (`feed.follower`) so revocations and permission changes made anywhere (API,
console, CLI, another node) evict cached entries within milliseconds. Whether a found
token passes is `auth.decide`'s answer; the parts a verifier runs on are built by
`auth.wiring` (a server's from its runtime: `Runtime.build_verifier`).

The cache is a lease (SPEC §10): it answers only while the last successful feed read is
younger than `TALLYKEY_PROPAGATION_TIMEOUT` and this node holds the lease that
acknowledgements count (`feed.follower`); otherwise the feed is read first (bounded:
no request waits on the store for longer than its budget). When the store cannot be
reached, cached verdicts keep verifying for `TALLYKEY_STALE_IF_ERROR` seconds and
within the node lease (never past a token's own expiry), and anything else answers 503.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from anyio import to_thread

from tallykey.auth import wiring
from tallykey.auth.decide import DECOY, decide, refusal, unknown_token, wrong_region
from tallykey.auth.header import extract_token
from tallykey.auth.shared_throttle import forget_node, share_failures
from tallykey.auth.verdict import Verdict
from tallykey.errors import (
    AuthenticationError,
    StoreUnavailable,
    TallykeyError,
    TokenFormatError,
    TooManyAttempts,
    UnknownToken,
)
from tallykey.feed import changes
from tallykey.monitor import metrics
from tallykey.monitor.usage import ALLOWED
from tallykey.tokens import format as token_format
from tallykey.tokens.format import ParsedToken, parse, token_digest
from tallykey.tokens.imports import KEY_CHARACTERS, MAX_KEY_LENGTH, MIN_KEY_LENGTH
from tallykey.tokens.models import IMPORTED

if TYPE_CHECKING:
    from tallykey.auth.cache import Entry
    from tallykey.auth.record import TokenRecord
    from tallykey.clock import Clock
    from tallykey.db.engine import Database
    from tallykey.feed.changes import Change
    from tallykey.settings import Settings

log = logging.getLogger(__name__)

_monotonic = time.monotonic
_sha256 = hashlib.sha256
#: Refusals that look like guessing or a stale secret; they count towards the throttle.
_COUNTED = ("invalid_token", "invalid_request")
_SAMPLE_MASK = metrics.LATENCY_SAMPLE_EVERY - 1
#: The common, well-formed header: `Bearer <token>` or `Basic <token>`, any case.
_PLAIN_HEADER = re.compile(r"(?:[Bb][Ee][Aa][Rr][Ee][Rr]|[Bb][Aa][Ss][Ii][Cc]) "
                           rf"({token_format.TOKEN_REGEX})")
#: An imported key (SPEC §16) in its own format: `Bearer <key>`, tried only when the
#: header is not a plain tallykey token (the native path does not pay for it).
_FOREIGN_HEADER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] "
                             rf"({KEY_CHARACTERS}{{{MIN_KEY_LENGTH},{MAX_KEY_LENGTH}}})")
#: Is any imported key stored? (Asked at most once per cache TTL until one is.)
_IMPORTS_PRESENT = "SELECT 1 FROM tokens WHERE kind = :kind LIMIT 1"


class Verifier:
    """Verify `Authorization` headers against the token store (SPEC §3).

    `Verifier()` reads the same settings as the server (`TALLYKEY_DATABASE_URL` or the data
    directory), so a revocation in the console stops embedded checks too.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        settings: Settings | None = None,
        database: Database | None = None,
        clock: Clock | None = None,
        cache_size: int | None = None,
        cache_ttl: float | None = None,
        sync_interval: float | None = None,
        background: bool = True,
    ) -> None:
        """Embedded: on the settings (`TALLYKEY_*`, or `settings`), with its own store
        connection (to `database_url`) unless `database` is given. A server builds its
        verifier from its runtime instead (`Runtime.build_verifier`, through `on`).
        Verdicts follow the database's clock unless `clock` is injected (tests,
        simulations)."""
        self._assemble(wiring.embedded(database_url, settings, database, clock),
                       cache_size, cache_ttl, sync_interval, background)

    @classmethod
    def on(cls, around: wiring.Surroundings, *, background: bool = True) -> Verifier:
        """A verifier on what its process shares (a server's: `Runtime.build_verifier`,
        with the runtime's settings, database, clocks and its one notifier, which also
        writes the usage alerts' notices)."""
        verifier = cls.__new__(cls)
        verifier._assemble(around, None, None, None, background)
        return verifier

    def _assemble(self, around: wiring.Surroundings, cache_size: int | None,
                  cache_ttl: float | None, sync_interval: float | None,
                  background: bool) -> None:
        """Take the parts `auth.wiring` builds on `around`, join the node list and follow
        the feed (from a background thread too, with `background`)."""
        self.settings = around.settings
        self.database = around.database
        self._owns_database = around.owns_database
        self.database_clock = around.database_clock
        self.clock = around.clock
        self.region = self.settings.region
        parts = wiring.build_parts(around, self._apply, cache_size=cache_size,
                                   cache_ttl=cache_ttl, sync_interval=sync_interval)
        self.cache = parts.cache
        self.limiter = parts.limiter
        self.usage = parts.usage
        #: Counters for metrics, kept as plain attributes (see `monitor.metrics`): calls
        #: (also the latency sampling clock), calls not answered from the cache, store
        #: loads, and refusals by reason.
        self.calls = 0
        self.slow_calls = 0
        self.loads = 0
        self.refusals: dict[str, int] = {}
        #: Uses of decoy tokens (their own metric: never an accepted or refused token).
        self.decoy_trips = 0
        self._refusals_lock = threading.Lock()
        self._published: dict[str, float] = {}
        self._publish_lock = threading.Lock()
        self.lookup = parts.lookup
        #: Imported keys (SPEC §16): whether any exists (once seen, for good), and when
        #: the store was last asked while none did.
        self._imports_seen = False
        self._imports_asked = -float("inf")
        self._imports_lock = threading.Lock()
        self._imports_sql = self.lookup.dialect_sql(_IMPORTS_PRESENT)
        #: Rate limits and credits (SPEC §13), admitted after a verdict passes.
        self.controls = parts.controls
        self.follower = parts.follower
        self.follower.periodic.append(self._flush_quietly)
        if self.limiter.limit > 0:
            self.follower.periodic.append(self._share_failures)
        self.follower.start_reading()
        self.database.after_verdict_change.append(self._sync_quietly)
        if background:
            self.start()

    # --- public API --------------------------------------------------------------------

    def verify(self, authorization: str | None, client_ip: str,
               required_scopes: Iterable[str] = (), user_agent: str | None = None,
               workspace: str | None = None, cost: int = 1,
               path: str | None = None) -> Verdict:
        """Verify one request. Never raises for bad input: a refusal is a `Verdict`.

        With `workspace` (an id or slug) the scopes are checked, and the verdict answers,
        for that workspace alone (SPEC §11); without it a scope passes only if the token
        holds it in every workspace it sees. `cost` is what the request spends of a
        token's usage credits (SPEC §13). `path` is what the request asked for: a decoy's
        alert names it (SPEC §17)."""
        hit = self.verify_cached(authorization, client_ip, required_scopes, user_agent,
                                 workspace, cost)
        if hit is not None:
            return hit
        first = self._begin(authorization, client_ip)
        if isinstance(first, Verdict):
            return first
        key, started, foreign = first
        verdict = self._finish(self._resolve(key, foreign), started, client_ip,
                               required_scopes, user_agent, workspace, cost, io=True,
                               path=path)
        assert verdict is not None
        return verdict

    async def averify(self, authorization: str | None, client_ip: str,
                      required_scopes: Iterable[str] = (),
                      user_agent: str | None = None, workspace: str | None = None,
                      cost: int = 1, path: str | None = None) -> Verdict:
        """As `verify`, but a cache miss queries the store, and a rate-limit lease or a
        credit spend asks Redis or the store, in a worker thread, so the event loop
        never blocks. A decoy takes that thread too, as an unknown token's look-up does."""
        hit = self.verify_cached(authorization, client_ip, required_scopes, user_agent,
                                 workspace, cost)
        if hit is not None:
            return hit
        first = self._begin(authorization, client_ip)
        if isinstance(first, Verdict):
            return first
        key, started, foreign = first
        found: Entry | Verdict | TokenFormatError | None = None
        if self.follower.serving():
            found = self.cache.get(key)
        if found is None:
            found = await to_thread.run_sync(self._resolve, key, foreign)
        verdict = self._finish(found, started, client_ip, required_scopes, user_agent,
                               workspace, cost)
        if verdict is None:  # the key controls need the network, or a decoy was used
            verdict = await to_thread.run_sync(functools.partial(
                self._finish, found, started, client_ip, required_scopes, user_agent,
                workspace, cost, io=True, path=path))
            assert verdict is not None
        return verdict

    def verify_cached(self, authorization: str | None, client_ip: str,
                      required_scopes: Iterable[str] = (),
                      user_agent: str | None = None,
                      workspace: str | None = None, cost: int = 1) -> Verdict | None:
        """The hot path alone: the verdict for a plainly formed header whose token is
        cached, or None (then `verify`/`averify` run the full path, with its precise
        diagnostics, or the key controls need the network). Never touches the database
        or Redis. One call in 64 is timed."""
        self.calls = calls = self.calls + 1
        started = None if calls & _SAMPLE_MASK else time.perf_counter()
        if authorization is None or _monotonic() >= self.follower.serve_until:
            return None  # the full path: a feed read or the lease first
        shaped = _PLAIN_HEADER.fullmatch(authorization)
        if shaped is None:
            shaped = _FOREIGN_HEADER.fullmatch(authorization)  # an imported key's own form
            if shaped is None or not self._imports_seen:
                return None
        # `token_digest`, inline (the token is ASCII: the patterns say so)
        entry = self.cache.get(_sha256(shaped.group(1).encode()).digest())
        if entry is None:
            return None
        limiter = self.limiter
        if limiter.failures and limiter.tracks(client_ip) and refusal(
                entry[1], self.clock.timestamp(), client_ip, required_scopes,
                workspace) is not None:
            return None  # a throttled network: only a valid cached token passes; else 429
        verdict = self._decide(entry, client_ip, required_scopes, user_agent, workspace, cost)
        if started is not None and verdict is not None:
            metrics.LATENCY.observe(time.perf_counter() - started)
        return verdict

    def sync(self) -> int:
        """Apply changes from the feed now; returns how many were applied. Raises
        `StoreUnavailable` when the store cannot be read."""
        return self.follower.sync()

    def flush_usage(self) -> int:
        """Write the usage gathered so far (and raise what alerts it holds)."""
        try:
            return self.usage.flush()
        finally:
            self.publish_metrics()

    def publish_metrics(self) -> None:
        """Add what was counted since the last call to the Prometheus metrics."""
        current: dict[str, float] = {f"outcome:{ALLOWED}": self.usage.totals[ALLOWED],
                                     "hits": self.calls - self.slow_calls,
                                     "misses": self.loads, "decoys": self.decoy_trips,
                                     "evictions": self.cache.evictions}
        with self._refusals_lock:
            current.update({f"outcome:{code}": n for code, n in self.refusals.items()})
        with self._publish_lock:  # the maintenance thread and a scrape may both publish
            for key, value in current.items():
                delta = value - self._published.get(key, 0)
                if delta <= 0:
                    continue
                self._published[key] = value
                if key == "hits":
                    metrics.CACHE_HITS.inc(delta)
                elif key == "misses":
                    metrics.CACHE_MISSES.inc(delta)
                elif key == "decoys":
                    metrics.DECOY_TRIPS.inc(delta)
                elif key == "evictions":
                    metrics.CACHE_EVICTIONS.inc(delta)
                else:
                    metrics.VERIFICATIONS.labels(key.removeprefix("outcome:")).inc(delta)

    def start(self) -> None:
        """Start the background work: feed polling, heartbeats, usage flushes and, on
        PostgreSQL, the LISTEN/NOTIFY listener."""
        self.follower.start()

    def close(self) -> None:
        """Stop the background work, write the remaining usage, leave the node list.
        Bounded in time whatever the store does (a stopping node must stop)."""
        store_down = self.follower.store_down
        self.follower.stop()
        self.controls.close()
        if self._sync_quietly in self.database.after_verdict_change:
            self.database.after_verdict_change.remove(self._sync_quietly)
        try:
            if not store_down:
                with contextlib.suppress(StoreUnavailable):
                    forget_node(self.database, self.follower.presence.id)
                self.flush_usage()
            elif self.usage.pending():
                log.warning("the token store is unreachable: %d requests' usage counts "
                            "were not written", self.usage.pending())
        except StoreUnavailable:
            log.warning("the token store went away: the last usage counts were not written")
        finally:
            self.lookup.close()
            if self._owns_database:
                self.database.dispose()

    # --- the steps -------------------------------------------------------------------------

    def _begin(self, authorization: str | None, client_ip: str
               ) -> Verdict | tuple[bytes, float | None, TokenFormatError | None]:
        """After a call that was no cache hit (`verify_cached`): a verdict already
        (refused offline), or the digest to look up, for one slow call in 64 when timing
        started, and for a credential in a foreign format (perhaps an imported key) the
        format error it gets if it is not one."""
        self.slow_calls += 1
        started = None if self.slow_calls & _SAMPLE_MASK else time.perf_counter()
        first = self._precheck(authorization, client_ip)
        if isinstance(first, Verdict):
            return first
        if isinstance(first, tuple):
            return token_digest(first[0]), started, first[1]
        return token_digest(str(first)), started, None

    def _finish(self, found: Entry | Verdict | TokenFormatError | None, started: float | None,
                client_ip: str,
                required_scopes: Iterable[str], user_agent: str | None,
                workspace: str | None = None, cost: int = 1,
                io: bool = False, path: str | None = None) -> Verdict | None:
        """The verdict, or None when the key controls need the network, or a decoy was
        used, and `io` is False (nothing was counted)."""
        if isinstance(found, Verdict):
            return found
        if isinstance(found, TokenFormatError):  # foreign, and no key was ever imported
            return self._refuse(found, client_ip)
        verdict = self._decide(found, client_ip, required_scopes, user_agent, workspace,
                               cost, io, path)
        if started is not None and verdict is not None:
            metrics.LATENCY.observe(time.perf_counter() - started)
        return verdict

    def _precheck(self, authorization: str | None, client_ip: str
                  ) -> ParsedToken | tuple[str, TokenFormatError] | Verdict:
        """Throttle, header and offline token checks: no database involved. A credential
        that is no tallykey token (no `tlk_` prefix) but could be an imported key comes
        back with the error it gets if it is not one."""
        retry_after = self.limiter.retry_after(client_ip)
        if retry_after is not None:
            self._count_refusal(TooManyAttempts.reason)
            return Verdict.refused(TooManyAttempts(retry_after))
        try:
            credential = extract_token(authorization)
            parsed = parse(credential)
        except TokenFormatError as error:
            if error.details.get("problem") == "prefix" and _FOREIGN_HEADER.fullmatch(
                    f"Bearer {credential}"):
                return credential, error
            return self._refuse(error, client_ip)
        except AuthenticationError as error:
            return self._refuse(error, client_ip)
        if parsed.region != self.region:
            return self._refuse(wrong_region(parsed.region, self.region,
                                             self.settings.base_url_for(parsed.region)),
                                client_ip)
        return parsed

    def _resolve(self, key: bytes, foreign: TokenFormatError | None = None
                 ) -> Entry | Verdict | TokenFormatError | None:
        """The cache entry for `key` under the lease rules, loading it from the store
        when needed: an entry, None (no such token), or a 503 verdict. Without the node
        lease the cache is not used at all (a load from the store is still exact).
        A credential in a foreign format (`foreign`: its format error) is looked up
        only while imported keys exist; otherwise it is refused as before, offline."""
        if foreign is not None and not self._imports_present():
            return foreign
        follower = self.follower
        leased = follower.ensure_lease()  # first: taking a lease up again fences reads
        if follower.refresh():
            if leased and follower.serving():
                entry = self.cache.get(key)
                if entry is not None:
                    return entry
                if self.cache.known_unknown(key):
                    return None
            if not follower.recently_failed():
                try:
                    return self._load(key)
                except StoreUnavailable as error:
                    follower.note_failure()
                    return self._stale(key, error)
        return self._stale(key, None)

    def _imports_present(self) -> bool:
        """Whether any imported key is stored: asked of the store (an index probe) at most
        once per cache TTL until one is, then never again (tokens are never erased). A
        store that cannot answer counts as yes: the look-up then meets the outage rules."""
        if self._imports_seen:
            return True
        # One question at a time: a credential that arrives while it is being asked waits
        # for its answer (bounded by the look-up's deadline), instead of being refused as
        # malformed because the question was asked "recently" and had no answer yet.
        # Only worker threads get here (`averify` resolves a miss off the event loop).
        with self._imports_lock:
            if self._imports_seen:
                return True
            now = _monotonic()
            if now - self._imports_asked < self.cache.ttl:
                return False
            try:
                seen = bool(self.lookup.run(self._imports_sql, {"kind": IMPORTED}))
            except StoreUnavailable:
                return True
            self._imports_asked = now
            self._imports_seen = seen
            return seen

    def _stale(self, key: bytes, error: StoreUnavailable | None) -> Entry | Verdict | None:
        """The store cannot be reached: a cached verdict if the stale window and the
        node lease allow."""
        if self.follower.within_stale_window():
            entry = self.cache.get_stale(key)
            if entry is not None:
                return entry
            if self.cache.known_unknown(key):
                return None
        self._count_refusal(StoreUnavailable.reason)
        return Verdict.refused(error or StoreUnavailable(
            "The token store cannot be reached, so this token cannot be checked now."))

    def _load(self, key: bytes) -> Entry | None:
        """Query the store for the token whose SHA-256 digest is `key`; cache the answer."""
        generation = self.cache.generation
        self.loads += 1
        record = self.lookup.load(key.hex())
        if record is None:
            self.cache.put_unknown(key, generation)
            return None
        return self.cache.put(key, record, generation)

    def _decide(self, entry: Entry | None, client_ip: str, required_scopes: Iterable[str],
                user_agent: str | None, workspace: str | None = None, cost: int = 1,
                io: bool = False, path: str | None = None) -> Verdict | None:
        """The verdict for a found entry (`auth.decide`), with what follows it: usage
        counts, the admission of rate limits and credits, the throttle's count. None when
        the key controls need the network, or a decoy was used, and `io` is False."""
        if entry is None:
            return self._refuse(self._unknown(), client_ip)
        _, record, allowed = entry
        now = self.clock.timestamp()
        # The common case, the first step of `decide` inline (a cache hit takes this way:
        # a call would cost it more than the rest of the step): a plain record, unexpired,
        # holding the scopes. Only `decide` refuses.
        workspace_id = None if workspace is None else record.workspace_of(workspace)
        held = record.scopes if workspace is None else record.workspaces.get(
            workspace_id or "")
        if record.plain and now < record.expires_ts and held is not None and held.issuperset(
                required_scopes):
            if record.controlled:
                return self._admit(record, allowed if workspace_id is None else
                                   allowed.for_workspace(workspace_id), now, client_ip,
                                   user_agent, cost, io)
            self.usage.record(record.token_id, now, client_ip, user_agent, ALLOWED)
            return allowed if workspace_id is None else allowed.for_workspace(workspace_id)
        outcome = decide(record, allowed, now, client_ip, required_scopes, workspace)
        if isinstance(outcome, AuthenticationError):
            return self._refused(record, outcome, now, client_ip, user_agent, io, path)
        if record.controlled:
            verdict = self._admit(record, outcome, now, client_ip, user_agent, cost, io)
            if verdict is None or not verdict.allowed:
                return verdict
        else:
            self.usage.record(record.token_id, now, client_ip, user_agent, ALLOWED)
            verdict = outcome
        if record.retires_ts is not None:  # a rotated-out secret in its grace period
            self.usage.old_secret_used(record.token_id, record.account_id,
                                       record.retires_ts, now, client_ip)
        return verdict

    def _refused(self, record: TokenRecord, error: AuthenticationError, now: float,
                 client_ip: str, user_agent: str | None, io: bool, path: str | None
                 ) -> Verdict | None:
        """A known token refused (`auth.decide`): counted and audited. A decoy answers as
        an unknown token does, and at its cost: the full path and a worker thread (`io`;
        None without), never the cache-hit path; it is counted only as a trip."""
        if error is DECOY:
            if not io:
                return None
            if record.revoked_at is None:
                self.usage.decoy_used(record.token_id, record.account_id, now, client_ip,
                                      user_agent, path)
                self.decoy_trips += 1
            self.limiter.failed(client_ip)  # as an unknown token counts
            return Verdict.refused(self._unknown())
        self.usage.deny(record.token_id, record.account_id, now, client_ip, error.reason)
        return self._refuse(error, client_ip)

    def _admit(self, record: TokenRecord, verdict: Verdict, now: float, client_ip: str,
               user_agent: str | None, cost: int, io: bool) -> Verdict | None:
        """Rate limits and credits (`auth.controls`) for a verdict that passed; None when
        they need the network and `io` is False."""
        try:
            outcome = self.controls.admit(record, verdict, now, cost, io)
        except StoreUnavailable as error:
            self.follower.note_failure()
            outcome = error
        if outcome.__class__ is Verdict:
            self.usage.record(record.token_id, now, client_ip, user_agent, ALLOWED)
            return outcome
        if isinstance(outcome, AuthenticationError):
            self.usage.deny(record.token_id, record.account_id, now, client_ip,
                            outcome.reason)
            refused = self._refuse(outcome, client_ip)  # with its RateLimit-* (SPEC §15)
            return refused if verdict.rates is None else replace(refused,
                                                                  rates=verdict.rates)
        if isinstance(outcome, TallykeyError):  # Redis (closed) or the store unreachable
            self._count_refusal(outcome.reason)
            return Verdict.refused(outcome)
        return None

    def _unknown(self) -> UnknownToken:
        return unknown_token(self.region)

    def _refuse(self, error: AuthenticationError, client_ip: str) -> Verdict:
        if error.code in _COUNTED:
            self.limiter.failed(client_ip)
        self._count_refusal(error.reason)
        return Verdict.refused(error)

    def _count_refusal(self, reason: str) -> None:
        with self._refusals_lock:
            self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def _apply(self, batch: list[Change]) -> None:
        """Evict what each change touches (called by the follower, in feed order)."""
        now = self.clock.timestamp()
        for _, subject, subject_id, at in batch:
            if subject == changes.TOKEN:
                self.cache.evict_token(subject_id)
            else:
                self.cache.clear()
            if at is not None:
                metrics.PROPAGATION_LAG.observe(max(0.0, now - at))

    def _flush_quietly(self) -> None:
        self.flush_usage()

    def _share_failures(self) -> None:
        share_failures(self.database, self.follower.presence.id, self.limiter)

    def _sync_quietly(self) -> None:
        """Right after a local commit: apply it before the caller gets its answer."""
        try:
            self.sync()
        except StoreUnavailable:
            pass  # the lease makes the next request read the feed first
        except Exception:
            log.exception("could not apply a change right after its commit")

