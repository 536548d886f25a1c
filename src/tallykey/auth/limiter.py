"""Failed-authentication throttle per client IP (`TALLYKEY_AUTH_FAIL_LIMIT` per minute).

Only the offending address is throttled: a token's legitimate holder on another IP is
never locked out. Memory is bounded: the oldest tracked addresses are forgotten first.
With several nodes, each one shares its own counts through the store about once a second
(`auth.shared_limits`) and learns the totals, so the limit holds across nodes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

WINDOW_SECONDS = 60
MAX_TRACKED = 100_000


class FailureLimiter:
    def __init__(self, limit: int, monotonic: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self._clock = monotonic
        #: ip -> (window, failures seen anywhere); the hot path only asks `ip in failures`.
        self.failures: dict[str, tuple[int, int]] = {}
        #: ip -> (window, failures seen by this node): what this node shares.
        self.own: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def window(self) -> int:
        return int(self._clock() // WINDOW_SECONDS)

    def retry_after(self, ip: str) -> int | None:
        """Seconds until `ip` may try again, or None when it is not throttled."""
        if self.limit <= 0:
            return None
        entry = self.failures.get(ip)
        if entry is None:
            return None
        now = self._clock()
        window = int(now // WINDOW_SECONDS)
        if entry[0] != window or entry[1] < self.limit:
            return None
        return max(1, int((window + 1) * WINDOW_SECONDS - now))

    def failed(self, ip: str) -> None:
        if self.limit <= 0:
            return
        window = self.window()
        with self._lock:
            for table in (self.own, self.failures):
                entry = table.pop(ip, None)
                count = entry[1] + 1 if entry and entry[0] == window else 1
                if len(table) >= MAX_TRACKED:
                    table.pop(next(iter(table)))
                table[ip] = (window, count)

    def own_counts(self, window: int) -> dict[str, int]:
        with self._lock:
            return {ip: count for ip, (w, count) in self.own.items() if w == window}

    def learn(self, window: int, totals: Mapping[str, int]) -> None:
        """Raise local counts to the totals all nodes saw in `window`."""
        with self._lock:
            for ip, total in totals.items():
                entry = self.failures.get(ip)
                mine = entry[1] if entry and entry[0] == window else 0
                if total > mine:
                    self.failures.pop(ip, None)
                    self.failures[ip] = (window, total)
