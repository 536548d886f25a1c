"""The audit hash chain: every entry carries SHA-256(previous hash + its canonical JSON).

One chain per account (plus `-` for the few account-less entries, such as first-run
setup), not one global chain, because:
- an account's trail is its own: an export of one account carries a chain that can be
  checked on its own, without entries of other tenants (SPEC §1: nothing crosses
  accounts);
- appends lock only their account's chain head, so tenants never wait for each other.

Appending happens in a `before_flush` hook, so however an `AuditEvent` is added to a
session it is chained. The hook locks the chain's head row in the caller's transaction
before reading the previous hash:
- PostgreSQL: `INSERT … ON CONFLICT DO NOTHING` (the head of a new chain), then
  `SELECT … FOR UPDATE`; the lock is held until commit, so writers on several nodes
  append strictly one after the other, and a rolled-back append leaves no gap.
- SQLite: pysqlite opens transactions lazily (a plain SELECT does not start one), so the
  head is read only after the INSERT: that write statement takes SQLite's single write
  lock first, and the read then sees the latest committed head (the effect of
  `BEGIN IMMEDIATE`, only for transactions that write audit entries).

`verify` walks every chain in order and reports the first entry that does not fit.
Tamper-evident, not tamper-proof: whoever can rewrite the whole table can recompute the
chain; record the heads `verify` prints elsewhere to anchor them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, UOWTransaction
from sqlalchemy.orm.attributes import instance_state

from tallykey.audit.models import AuditChainHead, AuditEvent
from tallykey.db.engine import Database

GENESIS = "0" * 64
NO_ACCOUNT = "-"


def chain_of(account_id: str | None) -> str:
    return account_id or NO_ACCOUNT


def normalised(details: dict[str, Any] | None) -> dict[str, Any]:
    """Details as they read back from the JSON column (tuples become lists, keys strings),
    so the hash computed before the insert is the hash of what is stored."""
    loaded: dict[str, Any] = json.loads(json.dumps(details or {}, default=str))
    return loaded


def canonical(entry: AuditEvent) -> str:
    """The entry's fields (except its id and hashes) as compact, key-sorted JSON."""
    return json.dumps({
        "chain": entry.chain, "seq": entry.seq, "account_id": entry.account_id,
        "occurred_at": entry.occurred_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "action": entry.action, "actor_type": entry.actor_type, "actor_id": entry.actor_id,
        "actor_label": entry.actor_label, "target_type": entry.target_type,
        "target_id": entry.target_id, "ip": entry.ip, "details": entry.details or {},
    }, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def entry_hash(prev_hash: str, entry: AuditEvent) -> str:
    return hashlib.sha256(f"{prev_hash}\n{canonical(entry)}".encode()).hexdigest()


# --- appending --------------------------------------------------------------------------


@event.listens_for(Session, "before_flush")
def _chain_new_entries(session: Session, _flush: UOWTransaction, _instances: Any) -> None:
    entries = [obj for obj in session.new if isinstance(obj, AuditEvent)]
    if not entries:
        return
    # The order they were added in, which is also the order their rows get their ids.
    entries.sort(key=lambda obj: instance_state(obj).insert_order or 0)
    by_chain: dict[str, list[AuditEvent]] = {}
    for entry in entries:
        by_chain.setdefault(chain_of(entry.account_id), []).append(entry)
    # Lock heads in a fixed order, so two transactions never wait for each other in a cycle.
    for chain in sorted(by_chain):
        seq, prev = _lock_head(session, chain)
        for entry in by_chain[chain]:
            seq += 1
            entry.chain, entry.seq, entry.prev_hash = chain, seq, prev
            entry.details = normalised(entry.details)
            entry.actor_label = entry.actor_label or ""
            entry.hash = prev = entry_hash(prev, entry)
        session.connection().execute(update(AuditChainHead).where(
            AuditChainHead.chain == chain).values(seq=seq, hash=prev))


def _lock_head(session: Session, chain: str) -> tuple[int, str]:
    connection = session.connection()
    values = {"chain": chain, "seq": 0, "hash": GENESIS}
    if connection.dialect.name == "postgresql":
        insert: Any = postgresql.insert(AuditChainHead)
    else:
        insert = sqlite.insert(AuditChainHead)
    connection.execute(insert.values(**values).on_conflict_do_nothing(
        index_elements=["chain"]))
    row = connection.execute(
        select(AuditChainHead.seq, AuditChainHead.hash)
        .where(AuditChainHead.chain == chain).with_for_update()).one()
    return int(row.seq), str(row.hash)


# --- verifying --------------------------------------------------------------------------


@dataclass(frozen=True)
class Break:
    """Where a chain stops fitting: the entry (None when a chain's head has no entries
    left at all) and what is wrong with it."""

    chain: str
    entry_id: int | None
    problem: str


@dataclass
class Report:
    entries: int = 0
    chains: int = 0
    breaks: list[Break] | None = None

    @property
    def intact(self) -> bool:
        return not self.breaks

    @property
    def first(self) -> Break | None:
        if not self.breaks:
            return None
        return min(self.breaks, key=lambda b: (b.entry_id is None, b.entry_id or 0))


BATCH = 2000


def verify(database: Database, account_id: str | None = None) -> Report:
    """Check every chain (or one account's): each entry's position, link and hash, ids
    rising along the chain, and the chain's end against its head. Reports the first
    problem of each broken chain."""
    with database.reading() as session:
        heads = {h.chain: (h.seq, h.hash) for h in session.scalars(
            select(AuditChainHead).where(*(
                [AuditChainHead.chain == chain_of(account_id)] if account_id else [])))}
        chains = set(heads)
        chains.update(session.scalars(select(AuditEvent.chain).distinct().where(*(
            [AuditEvent.chain == chain_of(account_id)] if account_id else []))))
    report = Report(breaks=[])
    for chain in sorted(chains):
        report.chains += 1
        problem = _verify_chain(database, chain, heads.get(chain), report)
        if problem is not None:
            assert report.breaks is not None
            report.breaks.append(problem)
    return report


def _entries(database: Database, chain: str) -> Iterator[AuditEvent]:
    after = 0
    while True:
        with database.reading() as session:
            rows = list(session.scalars(select(AuditEvent).where(
                AuditEvent.chain == chain, AuditEvent.seq > after)
                .order_by(AuditEvent.seq).limit(BATCH)))
        yield from rows
        if len(rows) < BATCH:
            return
        after = rows[-1].seq


def _verify_chain(database: Database, chain: str, head: tuple[int, str] | None,
                  report: Report) -> Break | None:
    prev_hash, expected_seq, prev_id = GENESIS, 1, 0
    last: AuditEvent | None = None
    for entry in _entries(database, chain):
        report.entries += 1
        if entry.seq != expected_seq:
            return Break(chain, entry.id, f"is at position {entry.seq} where {expected_seq} "
                         "was expected (entries before it were deleted or reordered)")
        if entry.prev_hash != prev_hash:
            return Break(chain, entry.id, "does not link to the entry before it")
        if entry.hash != entry_hash(prev_hash, entry):
            return Break(chain, entry.id, "was edited (its hash does not match its content)")
        if entry.id <= prev_id:
            return Break(chain, entry.id, "has an id lower than the entry before it "
                         "(rows were reordered)")
        prev_hash, expected_seq, prev_id, last = entry.hash, entry.seq + 1, entry.id, entry
    if head is None:
        return Break(chain, last.id if last else None, "the chain has no head record")
    if last is None:
        return Break(chain, None, f"all {head[0]} entries of the chain are missing")
    if head != (last.seq, last.hash):
        return Break(chain, last.id, f"is the last entry left, but the chain had {head[0]} "
                     "(later entries were deleted)")
    return None
