"""The failed-attempt throttle: per IP, per minute, bounded."""

from __future__ import annotations

from tallykey.network.throttle import FailureThrottle


class Ticker:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limit_applies_per_ip_and_resets_with_the_window() -> None:
    ticker = Ticker()
    limiter = FailureThrottle(3, monotonic=ticker)
    for _ in range(3):
        assert limiter.retry_after("198.51.100.1") is None
        limiter.failed("198.51.100.1")
    retry = limiter.retry_after("198.51.100.1")
    assert retry is not None and 1 <= retry <= 60
    assert limiter.retry_after("198.51.100.2") is None
    ticker.now += 60
    assert limiter.retry_after("198.51.100.1") is None


def test_zero_turns_it_off() -> None:
    limiter = FailureThrottle(0)
    for _ in range(1000):
        limiter.failed("198.51.100.1")
    assert limiter.retry_after("198.51.100.1") is None


def test_ipv6_addresses_count_per_64_and_ipv4_per_address() -> None:
    limiter = FailureThrottle(2, monotonic=Ticker())
    limiter.failed("2001:db8:1:2::1")
    limiter.failed("2001:db8:1:2:ffff::9")
    assert limiter.retry_after("2001:db8:1:2::abcd") is not None
    assert limiter.tracks("2001:db8:1:2::77") and not limiter.tracks("2001:db8:1:3::1")
    assert limiter.retry_after("2001:db8:1:3::1") is None
    limiter.failed("198.51.100.1")
    limiter.failed("198.51.100.1")
    assert limiter.retry_after("198.51.100.1") is not None
    assert limiter.retry_after("198.51.100.2") is None
