"""The link to Redis that shares rate-limit counts across nodes (`TALLYKEY_REDIS_URL`).

One atomic Lua script leases allowances: it never hands out more than the limit in a
window, whatever the number of nodes. Every call is bounded by `TALLYKEY_REDIS_TIMEOUT`
(no retries, no back-off), and a failure opens a breaker for `RETRY_SECONDS`: meanwhile
no request waits on Redis at all, and the counter follows `TALLYKEY_REDIS_FAILURE`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

#: Seconds the breaker stays open after a failed call before Redis is tried again.
RETRY_SECONDS = 1.0
#: A node leases at most this share of what is left in a window (1/16), and at most
#: `MAX_LEASE` allowances at once; with fewer than 16 left, one at a time (exact).
LEASE_FRACTION = 16
MAX_LEASE = 100

#: KEYS[1] the window's counter; ARGV limit, ttl, fraction, most, carry. First adds
#: `carry` (requests a node admitted on its own while Redis was away, in this window),
#: then grants. Returns {granted, count after the grant}; granted is 0 once the window's
#: limit is reached.
_LEASE = """
local limit = tonumber(ARGV[1])
local carry = tonumber(ARGV[5] or '0')
local current
if carry > 0 then
  current = redis.call('INCRBY', KEYS[1], carry)
else
  current = tonumber(redis.call('GET', KEYS[1]) or '0')
end
local left = limit - current
if left > 0 then
  local grant = math.floor(left / tonumber(ARGV[3]))
  if grant < 1 then grant = 1 end
  if grant > tonumber(ARGV[4]) then grant = tonumber(ARGV[4]) end
  current = redis.call('INCRBY', KEYS[1], grant)
  left = grant
else
  left = 0
end
if current > 0 and redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return {left, current}
"""


class RedisLink:
    """Leases rate-limit allowances from Redis; `None` from `lease` means Redis failed
    (and the breaker is open for `RETRY_SECONDS`)."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        redis = _redis()
        self.errors: tuple[type[Exception], ...] = (redis.exceptions.RedisError, OSError)
        self.client: Any = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0), retry_on_timeout=False)
        self._lease = self.client.register_script(_LEASE)
        self._down_until = 0.0
        self._down_since: float | None = None
        self._lock = threading.Lock()

    def up(self) -> bool:
        """False while the breaker is open (a call failed less than RETRY_SECONDS ago)."""
        return time.monotonic() >= self._down_until

    def lease(self, key: str, limit: int, ttl: int, carry: int = 0) -> tuple[int, int] | None:
        """(allowances granted, the window's count after the grant), or None on failure.
        `carry`: requests this node admitted on its own in this window while Redis was
        away, added to the shared count first."""
        try:
            granted, count = self._lease(keys=[key], args=[limit, ttl, LEASE_FRACTION,
                                                            MAX_LEASE, carry])
        except self.errors as error:
            self._fail(error)
            return None
        if self._down_since is not None:
            with self._lock:
                if self._down_since is not None:
                    log.warning("Redis answers again after %.1f s: rate limits are shared "
                                "across nodes again", time.monotonic() - self._down_since)
                    self._down_since = None
        return int(granted), int(count)

    def close(self) -> None:
        self.client.close()

    def _fail(self, error: Exception) -> None:
        with self._lock:
            now = time.monotonic()
            self._down_until = now + RETRY_SECONDS
            if self._down_since is None:
                self._down_since = now
                log.warning("Redis (rate-limit counts) cannot be reached: %s; retrying every "
                            "%.0f s", type(error).__name__, RETRY_SECONDS)


def _redis() -> Any:
    """The redis package, imported only when `TALLYKEY_REDIS_URL` is set (an embedded
    install leaves it out): one line naming what to install when it is missing."""
    try:
        import redis
        import redis.backoff
        import redis.exceptions
        import redis.retry
    except ModuleNotFoundError as missing:
        raise ModuleNotFoundError(
            "TALLYKEY_REDIS_URL is set but the redis package is not installed: "
            "pip install 'tallykey[embedded,redis]'", name=missing.name) from None
    return redis
