"""Failed-authentication throttle per client IP (`TALLYKEY_AUTH_FAIL_LIMIT` per minute).

Only the offending address is throttled: a token's legitimate holder on another IP is
never locked out. Memory is bounded: the oldest tracked addresses are forgotten first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

WINDOW_SECONDS = 60
MAX_TRACKED = 100_000


class FailureLimiter:
    def __init__(self, limit: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._monotonic = monotonic
        #: ip -> (window index, failures in it); the hot path only asks `ip in failures`.
        self.failures: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def retry_after(self, ip: str) -> int | None:
        """Seconds until `ip` may try again, or None when it is not throttled."""
        if self.limit <= 0:
            return None
        entry = self.failures.get(ip)
        if entry is None:
            return None
        now = self._monotonic()
        window = int(now // WINDOW_SECONDS)
        if entry[0] != window or entry[1] < self.limit:
            return None
        return max(1, int((window + 1) * WINDOW_SECONDS - now))

    def failed(self, ip: str) -> None:
        if self.limit <= 0:
            return
        window = int(self._monotonic() // WINDOW_SECONDS)
        with self._lock:
            entry = self.failures.pop(ip, None)
            count = entry[1] + 1 if entry and entry[0] == window else 1
            if len(self.failures) >= MAX_TRACKED:
                self.failures.pop(next(iter(self.failures)))
            self.failures[ip] = (window, count)
