"""The key-control rules as plain functions: validation, cost headers, refill periods."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tallykey.controls import rules
from tallykey.errors import ValidationFailed


def test_rate_limits_are_named_bounded_and_shared_only_two_ways() -> None:
    assert rules.clean_rate_limits([{"limit": 5, "per_seconds": 1}]) == [
        rules.RateRule("default", 5, 1, None)]
    for bad in ({"limit": 0, "per_seconds": 1}, {"limit": True, "per_seconds": 1},
                {"limit": 1, "per_seconds": 30 * 86_400 + 1}, {"limit": 1.5, "per_seconds": 1},
                {"name": "Has Space", "limit": 1, "per_seconds": 1},
                {"limit": 1, "per_seconds": 1, "shared": "account"}):
        with pytest.raises(ValidationFailed) as refused:
            rules.clean_rate_limits([bad])
        assert refused.value.details["field"] == "rate_limits"
    with pytest.raises(ValidationFailed, match="at most 10"):
        rules.clean_rate_limits([{"name": f"l{i}", "limit": 1, "per_seconds": 1}
                                 for i in range(11)])


def test_metadata_is_a_small_plain_json_object() -> None:
    assert rules.clean_metadata({"a": [1, "b"]}) == {"a": [1, "b"]}
    assert rules.clean_metadata({}) is None
    exactly = {"k": "x" * (rules.MAX_METADATA_BYTES - len('{"k":""}'))}
    assert rules.clean_metadata(exactly) == exactly
    for bad in ({"k": "x" * 4096}, [1], "text", {"n": float("nan")},
                {"k": "é" * 2100}):  # bytes, not characters, count
        with pytest.raises(ValidationFailed):
            rules.clean_metadata(bad)


def test_cost_headers_and_external_ids() -> None:
    assert [rules.parse_cost(t) for t in ("0", " 7 ", "1000")] == [0, 7, 1000]
    assert [rules.parse_cost(t) for t in ("-1", "1001", "1e3", "", "٣", "00001")] == [
        None] * 6
    assert rules.clean_external_id("  cust_1 ") == "cust_1"
    assert rules.clean_external_id("") is None
    with pytest.raises(ValidationFailed):
        rules.clean_external_id("a\nb")


def test_refill_periods_start_at_midnight_and_on_the_first_of_the_month() -> None:
    moment = datetime(2026, 12, 31, 23, 59, tzinfo=UTC).timestamp()
    day = rules.period_of("daily", moment)
    assert rules.period_start("daily", day + 1) == datetime(2027, 1, 1, tzinfo=UTC)
    month = rules.period_of("monthly", moment)
    assert rules.period_start("monthly", month) == datetime(2026, 12, 1, tzinfo=UTC)
    assert rules.period_start("monthly", month + 1) == datetime(2027, 1, 1, tzinfo=UTC)
    with pytest.raises(ValidationFailed, match="interval"):
        rules.clean_credits(5, {"amount": 5, "interval": "weekly"})


def test_the_written_form_of_a_rate_limit_reads_back() -> None:
    for text in ("default=100/60", "customer=1000/3600:external_id", "o=5/1:owner"):
        assert rules.written_rate_limit(rules.parse_rate_limit(text)) == text
    assert rules.parse_rate_limit(" 10/1 ") == {"name": "default", "limit": 10,
                                               "per_seconds": 1, "shared": None}
    for bad in ("100", "a=b/c", "x=1/2:account", "x=-1/60"):
        with pytest.raises(ValidationFailed, match="NAME=LIMIT/SECONDS"):
            rules.parse_rate_limit(bad)
