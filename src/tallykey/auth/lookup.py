"""The cache-miss path: one indexed query on a raw driver connection.

The ORM costs milliseconds per load; verification must cost microseconds, so a miss runs
one hand-written SELECT (the secret hash's unique index, joined to its token, account,
owner, identity, the account's live workspaces and the owner's grants in each) on a small pool of
raw DBAPI connections of its own.

The identity and the plan are joined by their primary keys alone, and that they belong
to the token's account is checked on the row (`_record`). With the account in the join,
a plan made while those tables were empty (a new store's first miss) reached them through
their account index: after a bulk load of identities, every miss read all of the
account's identities until autoanalyze had the statement planned again.

Connections are in autocommit mode: a read needs no transaction, and psycopg keeps its
prepared statements (a ROLLBACK would discard them, re-planning the join on every miss).
On PostgreSQL the statement is prepared on its first execution, with a generic plan: a
miss is one round trip (Bind, Execute, Sync), and the plan is never made again
(tests/auth/test_cache_bound.py reads both off the wire). Each connection keeps one
cursor, so a miss does not set up a cursor and its column loaders anew.
Every checkout is exception-safe and bounded in time: a failed connect returns its slot,
and a caller waits for a free slot no longer than the connect timeout, so an outage
turns into `StoreUnavailable`, never into a hang.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from tallykey.accounts.permissions import Permissions
from tallykey.auth.record import TokenRecord, networks
from tallykey.controls.rules import IDENTITY_SHARED, RateRule, Refill
from tallykey.db.engine import Database, store_errors
from tallykey.errors import StoreUnavailable
from tallykey.tokens.models import APPLICATION, CONTAINED

_SQL = """
SELECT s.retires_at, t.id, t.account_id, t.kind, t.workspace_id, t.expires_at,
       t.revoked_at, t.ip_allowlist, t.scopes, t.owner_id, a.slug, a.ip_allowlist,
       u.email, u.role, u.active, w.id, w.slug, g.scopes, a.active, t.rate_limits,
       t.credits_remaining, t.name, t.credits_refill_amount, t.credits_refill_interval,
       t.metadata, t.external_id, t.suspended_at,
       (SELECT su.email FROM users su WHERE su.id = t.suspended_by_id), t.suspend_reason,
       t.pending_at, t.successor_id, i.id, i.external_id, i.metadata, i.rate_limits,
       i.credits_remaining, i.credits_refill_amount, i.credits_refill_interval,
       p.id, p.rate_limits, p.refill_amount, p.refill_interval, p.scopes,
       i.account_id, p.account_id, t.renewed_from_id
FROM token_secrets s
JOIN tokens t ON t.id = s.token_id
JOIN accounts a ON a.id = t.account_id
LEFT JOIN identities i ON i.id = t.identity_id
LEFT JOIN plans p ON p.id = COALESCE(t.plan_id, i.plan_id)
LEFT JOIN users u ON u.id = t.owner_id
LEFT JOIN workspaces w ON w.account_id = t.account_id AND w.archived_at IS NULL
     AND (t.workspace_id IS NULL OR w.id = t.workspace_id)
LEFT JOIN workspace_grants g ON g.user_id = t.owner_id AND g.workspace_id = w.id
WHERE s.secret_hash = {param}
"""

#: The first token of a renewal chain (a successor's rate-limit windows are its chain's).
_LINEAGE = """
WITH RECURSIVE up(id, parent, depth) AS (
  SELECT id, renewed_from_id, 0 FROM tokens WHERE id = :token_id
  UNION ALL
  SELECT t.id, t.renewed_from_id, up.depth + 1 FROM tokens t JOIN up ON t.id = up.parent
  WHERE up.depth < 64
)
SELECT id FROM up ORDER BY depth DESC LIMIT 1
"""

#: Who a suspension nobody signed for is named after, by its reason.
_SUSPENDERS = {CONTAINED: "tallykey containment (an anomaly alert)"}

DEFAULT_CONNECTIONS = 8
#: Client-side deadline of one lookup (an index probe that takes milliseconds): a store
#: that needs longer is not answering, and the request gets 503 within its budget.
LOOKUP_DEADLINE = 1.0
#: The longest a miss waits for a free lookup connection.
SLOT_WAIT_SECONDS = 0.5
#: A lookup that failed faster than this (a dropped idle connection) is tried again once.
RETRY_FAST_FAILURE_SECONDS = 0.2
MAX_SHARED = 1_000_000


class Shared:
    """Hands out one instance per equal value (account ids, scope sets, e-mails…), so a
    full cache holds each distinct value once instead of once per token."""

    def __init__(self) -> None:
        self._values: dict[Any, Any] = {}

    def __call__(self, value: Any) -> Any:
        if len(self._values) > MAX_SHARED:
            self._values.clear()
        return self._values.setdefault(value, value)


class RecordLookup:
    """Loads `TokenRecord`s through a bounded pool of raw connections."""

    def __init__(self, database: Database, connections: int = DEFAULT_CONNECTIONS) -> None:
        self.database = database
        self._sqlite = database.dialect == "sqlite"
        self._sql = _SQL.format(param="?" if self._sqlite else "%s")
        self._lineage = self.dialect_sql(_LINEAGE)
        self._shared = Shared()
        self._maps: dict[tuple[Any, ...], dict[str, Any]] = {}
        #: Idle connections, each with its cursor: (connection, cursor).
        self._idle: queue.LifoQueue[tuple[Any, Any]] = queue.LifoQueue()
        self._slots = queue.Queue[None](maxsize=connections)
        for _ in range(connections):
            self._slots.put_nowait(None)

    def load(self, secret_hash: str) -> TokenRecord | None:
        """The record of the token whose secret hashes to `secret_hash`, or None.
        Raises `StoreUnavailable` when the store cannot answer in time. An idle
        connection that the store dropped meanwhile (a restart, a reset partition) fails
        at once: then the query is tried once more on a new connection."""
        began = time.monotonic()
        try:
            rows = self._query(secret_hash)
        except StoreUnavailable:
            if (time.monotonic() - began > RETRY_FAST_FAILURE_SECONDS
                    or self.database.breaker.is_open()):
                raise
            rows = self._query(secret_hash)
        if not rows:
            return None
        renewed_from = rows[0][-1]
        lineage = (self.run(self._lineage, {"token_id": renewed_from})[0][0]
                   if renewed_from is not None else None)
        return self._record(rows, lineage)

    def _query(self, secret_hash: str) -> list[Any]:
        with self._cursor() as cursor:
            cursor.execute(self._sql, (secret_hash,))
            return list(cursor.fetchall())

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[Any]:
        """The cursor of a connection, for one query: the slot is always given back, and
        a connection that failed is closed rather than reused."""
        try:
            self._slots.get(timeout=SLOT_WAIT_SECONDS)
        except queue.Empty:
            raise StoreUnavailable("The token store is not answering: every lookup "
                                   "connection is busy.") from None
        pair = None
        try:
            pair = self._checkout()
            with store_errors():
                yield pair[1]
        except BaseException:
            if pair is not None:
                _close_quietly(pair[0])
                pair = None
                self.close()  # the idle ones went through the same outage: new ones next
            raise
        finally:
            if pair is not None:
                self._idle.put(pair)
            self._slots.put(None)

    def close(self) -> None:
        while True:
            try:
                _close_quietly(self._idle.get_nowait()[0])
            except queue.Empty:
                return

    def _checkout(self) -> tuple[Any, Any]:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        connection = self.database.raw_connection(autocommit=True, deadline=LOOKUP_DEADLINE)
        if not self._sqlite and not self.database.pooled:
            # Prepared from the first miss, with the generic plan at once: the query is
            # one unique-index probe whatever the hash, and planning its six-table join
            # costs ten times its execution (PostgreSQL would otherwise plan it afresh
            # for each of the statement's first five executions).
            connection.prepare_threshold = 0
            try:
                with store_errors():
                    connection.execute("SET plan_cache_mode = force_generic_plan")
            except BaseException:
                _close_quietly(connection)
                raise
        return connection, connection.cursor()

    def _record(self, rows: list[Any], lineage: str | None = None) -> TokenRecord:
        share = self._shared
        (retires_at, token_id, account_id, kind, workspace_id, expires_at, revoked_at,
         token_ips, token_scopes, owner_id, slug, account_ips, owner_email, owner_role,
         owner_active, *_workspace, account_active, rate_limits, credits, name, refill_amount,
         refill_interval, meta, external_id, suspended_at, suspended_by, suspend_reason, pending_at,
         successor_id, identity_id, identity_external_id, identity_meta, identity_limits,
         identity_credits, identity_refill_amount, identity_refill_interval) = rows[0][:-8]
        identity_account, plan_account = rows[0][-3:-1]
        if identity_id is not None and identity_account != account_id:
            # never another account's identity (nor the plan it names, below)
            identity_id = identity_limits = identity_credits = identity_refill_amount = None
        plan_row = rows[0][-8:-3] if plan_account == account_id else (None,) * 5
        plan = _plan_controls(plan_row, self._json_value)  # SPEC §16
        own_scopes = frozenset(self._json(token_scopes))
        own_scopes = share(own_scopes if plan.ceiling is None else own_scopes & plan.ceiling)
        live = {row[15]: row[16] for row in rows if row[15]}  # the live workspaces in reach
        grants = {row[15]: frozenset(self._json(row[17])) for row in rows
                  if row[15] and row[17] is not None}
        archived = workspace_id is not None and workspace_id not in live
        if kind != APPLICATION and owner_id is not None:
            permissions = Permissions(owner_role, bool(owner_active), grants)
            if permissions.is_admin:
                by_workspace = dict.fromkeys(live, own_scopes)
            elif permissions.is_auditor:  # reads in the console and API, holds no scope
                by_workspace = dict.fromkeys(grants, frozenset())
            else:
                by_workspace = {ws: share(own_scopes & held) for ws, held in grants.items()}
            flat = _held_everywhere(own_scopes, by_workspace, workspace_id,
                                    unrestricted=permissions.is_admin)
            scopes = share(flat if permissions.active else frozenset())
        else:
            by_workspace = dict.fromkeys(live, own_scopes)
            scopes = own_scopes
        return TokenRecord(
            token_id=token_id, account_id=share(account_id), account_slug=share(slug),
            kind=share(kind), workspace_id=share(workspace_id),
            expires_at=self._time(expires_at), revoked_at=self._time(revoked_at),
            secret_retires_at=self._time(retires_at),
            token_networks=share(networks(self._json(token_ips))),
            account_networks=share(networks(self._json(account_ips))),
            scopes=scopes, token_scopes=own_scopes,
            workspaces=self._shared_map(by_workspace),
            owner_id=share(owner_id), owner_email=share(owner_email),
            owner_active=bool(owner_active) if owner_id is not None else True,
            workspace_slugs=self._shared_map({live[ws]: ws for ws in by_workspace}),
            workspace_archived=archived,
            account_active=bool(account_active) if account_active is not None else True,
            rate_rules=share(tuple(RateRule(r["name"], r["limit"], r["per_seconds"],
                                            r.get("shared"))
                                   for r in self._json_value(rate_limits) or plan.limits)
                             + tuple(RateRule(r["name"], r["limit"], r["per_seconds"],
                                              IDENTITY_SHARED)
                                     for r in (self._json_value(identity_limits) or ()
                                               if identity_id is not None else ()))),
            has_credits=credits is not None,
            refill=share(Refill(int(refill_amount), refill_interval))
            if refill_amount is not None and refill_interval else None,
            metadata=self._json_value(meta), external_id=external_id, name=name,
            suspended_at=self._time(suspended_at),
            suspended_by=(share(suspended_by or _SUSPENDERS.get(suspend_reason, "the operator"))
                          if suspended_at is not None else None),
            pending_at=self._time(pending_at),
            renewed=successor_id is not None, lineage_id=lineage or token_id,
            identity=None if identity_id is None else {
                "id": identity_id, "external_id": identity_external_id,
                "metadata": self._json_value(identity_meta)},
            identity_id=share(identity_id),
            identity_has_credits=identity_id is not None and identity_credits is not None,
            identity_refill=share(Refill(int(identity_refill_amount),
                                         identity_refill_interval))
            if identity_refill_amount is not None and identity_refill_interval else None,
            plan_id=share(plan.id),
            plan_refill=share(plan.refill) if credits is None else None,
        )

    def _shared_map(self, mapping: dict[str, Any]) -> dict[str, Any]:
        """One instance per equal mapping (tokens of one account or owner share theirs);
        never mutated once shared."""
        if len(self._maps) > MAX_SHARED:
            self._maps.clear()
        return self._maps.setdefault(tuple(sorted(mapping.items())), mapping)

    def dialect_sql(self, sql: str) -> str:
        """`sql` with `:name` parameters written as this store's driver expects them."""
        return sql if self._sqlite else re.sub(r":(\w+)", r"%(\1)s", sql)

    def run(self, sql: str, params: Mapping[str, Any]) -> list[Any]:
        """One statement (from `dialect_sql`) on a pooled connection in autocommit mode:
        the rows it returns. Raises `StoreUnavailable` when the store cannot answer in
        time."""
        with self._cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def run_write(self, sql: str, params: Mapping[str, Any]) -> None:
        """As `run`, for a statement that returns no rows."""
        with self._cursor() as cursor:
            cursor.execute(sql, params)

    def _json_value(self, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str | bytes) else value

    def _json(self, value: Any) -> list[str]:
        if value is None:
            return []
        return list(json.loads(value) if isinstance(value, str | bytes) else value)

    def _time(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class PlanControls(NamedTuple):
    """What a token's plan (its own, else its identity's) brings to its record: rate
    limits (used when the token has none of its own), the refill (used when it has no
    credits of its own) and the scopes ceiling (always)."""

    id: str | None
    limits: tuple[dict[str, Any], ...]
    refill: Refill | None
    ceiling: frozenset[str] | None


def _plan_controls(row: Sequence[Any], decode: Callable[[Any], Any]) -> PlanControls:
    plan_id, limits, amount, interval, scopes = row
    if plan_id is None:
        return PlanControls(None, (), None, None)
    ceiling = decode(scopes)
    return PlanControls(plan_id, tuple(decode(limits) or ()),
                        Refill(int(amount), interval) if amount is not None and interval
                        else None, None if ceiling is None else frozenset(ceiling))


def _held_everywhere(own: frozenset[str], by_workspace: dict[str, frozenset[str]],
                     pinned: str | None, *, unrestricted: bool) -> frozenset[str]:
    """The scopes a personal token passes with when a request names no workspace: those
    its owner holds in every workspace the token sees (never the union: a scope held in
    one workspace must not pass for another). An administrator holds every scope
    everywhere, the admin-only account scopes included."""
    if unrestricted:
        return own
    if pinned is not None:
        return by_workspace.get(pinned, frozenset())
    if not by_workspace:
        return frozenset()
    return frozenset.intersection(*by_workspace.values())


def _close_quietly(connection: Any) -> None:
    with contextlib.suppress(Exception):  # a broken connection is being discarded anyway
        connection.close()
