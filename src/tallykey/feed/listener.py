"""PostgreSQL LISTEN/NOTIFY: wakes a node the moment a change commits anywhere.

The listener runs in its own thread on its own connection. If that connection is lost
it reconnects, and resynchronises from the feed (changes missed meanwhile are still in
the `verdict_changes` table); the follower's poll and its cache lease bound staleness
during the gap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from tallykey.db.engine import Database
from tallykey.feed.changes import CHANNEL

log = logging.getLogger(__name__)
APPLICATION_NAME = "tallykey-listener"
#: Client-side deadline of the listener's statements (LISTEN, SET): a store that takes
#: longer is not answering, and the listener reconnects.
LISTEN_DEADLINE = 2.0


class ChangeListener:
    def __init__(self, database: Database, on_change: Callable[[], object]) -> None:
        self.database = database
        self.on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tallykey-listen", daemon=True)
        self.connected = threading.Event()
        #: `time.monotonic()` of the last notification heard (not of resynchronisations).
        self.heard_at = float("-inf")
        self._warned = False

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except Exception as error:
                if self.connected.is_set() or not self._warned:
                    log.warning("change listener lost its connection (%s); reconnecting",
                                type(error).__name__)
                    self._warned = True
                self.connected.clear()
                self._stop.wait(0.5)

    def _listen(self) -> None:
        connection = self.database.raw_connection(autocommit=True, deadline=LISTEN_DEADLINE)
        try:
            self._warned = False
            connection.execute(f"SET application_name = '{APPLICATION_NAME}'")
            connection.execute(f"LISTEN {CHANNEL}")
            self.connected.set()
            self.on_change()  # resynchronise: catch up on what happened while away
            while not self._stop.is_set():
                woke = False
                for _ in connection.notifies(timeout=0.5):
                    woke = True
                    break
                if woke:
                    self.heard_at = time.monotonic()
                    self.on_change()
        finally:
            self.connected.clear()
            connection.close()
