"""Random keys the server makes for itself on first use and shares with every node
through the store (`server_keys`), e.g. the key that signs the sign-in form's anti-CSRF
value. Each node reads a key once and keeps it in memory."""

from __future__ import annotations

import secrets
import threading
import weakref

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from tallykey.auth.models import ServerKey
from tallykey.clock import Clock
from tallykey.db.engine import Database

_known: weakref.WeakKeyDictionary[Database, dict[str, bytes]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def server_key(database: Database, clock: Clock, name: str) -> bytes:
    """The 256-bit key called `name`, made (once, whichever node is first) if missing."""
    cached = _known.get(database, {}).get(name)
    if cached is not None:
        return cached
    with _lock:
        values = {"name": name, "secret": secrets.token_hex(32), "created_at": clock.now()}
        with database.transaction() as session:
            insert = (postgresql.insert if database.dialect == "postgresql" else sqlite.insert)
            session.execute(insert(ServerKey).values(**values)
                            .on_conflict_do_nothing(index_elements=["name"]))
            stored = session.scalar(select(ServerKey.secret).where(ServerKey.name == name))
        assert stored is not None
        key = bytes.fromhex(stored)
        _known.setdefault(database, {})[name] = key
        return key
