"""Exporting the audit trail as CSV or JSON lines, streamed in id order. Rows carry their
chain fields, so an exported chain can be checked independently of tallykey."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from tallykey.audit.models import AuditEvent

FORMATS = ("csv", "jsonl")
COLUMNS = ("id", "occurred_at", "account_id", "action", "actor_type", "actor_id",
           "actor_label", "target_type", "target_id", "ip", "details", "chain", "seq",
           "prev_hash", "hash")
BATCH = 1000


def as_row(entry: AuditEvent) -> dict[str, Any]:
    return {"id": entry.id, "occurred_at": entry.occurred_at.isoformat(),
            "account_id": entry.account_id, "action": entry.action,
            "actor_type": entry.actor_type, "actor_id": entry.actor_id,
            "actor_label": entry.actor_label, "target_type": entry.target_type,
            "target_id": entry.target_id, "ip": entry.ip, "details": entry.details,
            "chain": entry.chain, "seq": entry.seq, "prev_hash": entry.prev_hash,
            "hash": entry.hash}


def json_lines(rows: Iterator[AuditEvent]) -> Iterator[str]:
    for entry in rows:
        yield json.dumps(as_row(entry), sort_keys=True) + "\n"


def _cell(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if isinstance(value, dict) else (
        "" if value is None else str(value))
    return spreadsheet_safe(text)


def spreadsheet_safe(text: str) -> str:
    """`text` for a CSV cell: spreadsheets run cells that start with `=`, `+`, `-`, `@`,
    a tab or a carriage return as formulas (CSV injection), so those get a leading `'`."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_lines(rows: Iterator[AuditEvent]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for entry in rows:
        row = as_row(entry)
        writer.writerow([_cell(row[c]) for c in COLUMNS])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
