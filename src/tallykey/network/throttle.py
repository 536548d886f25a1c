"""Failed-authentication throttle per client network (`TALLYKEY_AUTH_FAIL_LIMIT` per
minute): an IPv4 address, or an IPv6 /64 (`client_ip.network_key`).

Only the offending network is throttled: a token's legitimate holder elsewhere is never
locked out, and on a throttled network a valid token the node has cached still passes
(the verifier asks `tracks` on its hot path). Memory is bounded: the oldest tracked
networks are forgotten first.
With several nodes, each one shares its own counts through the store about once a second
(`auth.shared_throttle`) and learns the totals, so the limit holds across nodes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from tallykey.network.client_ip import network_key

WINDOW_SECONDS = 60
MAX_TRACKED = 100_000


class FailureThrottle:
    def __init__(self, limit: int, monotonic: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self._clock = monotonic
        #: network -> (window, failures seen anywhere); the hot path only asks `tracks`.
        self.failures: dict[str, tuple[int, int]] = {}
        #: network -> (window, failures seen by this node): what this node shares.
        self.own: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def window(self) -> int:
        return int(self._clock() // WINDOW_SECONDS)

    def tracks(self, ip: str) -> bool:
        """Whether `ip`'s network failed recently (cheap; for the hot path)."""
        return bool(self.failures) and network_key(ip) in self.failures

    def retry_after(self, ip: str) -> int | None:
        """Seconds until `ip`'s network may try again, or None when it is not throttled."""
        if self.limit <= 0:
            return None
        entry = self.failures.get(network_key(ip))
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
        key = network_key(ip)
        with self._lock:
            for table in (self.own, self.failures):
                entry = table.pop(key, None)
                count = entry[1] + 1 if entry and entry[0] == window else 1
                if len(table) >= MAX_TRACKED:
                    table.pop(next(iter(table)))
                table[key] = (window, count)

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
