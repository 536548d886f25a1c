"""The pure field rules: names, CIDRs, scopes, expiry, grace."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from tallykey.errors import ValidationFailed
from tallykey.tokens import policy

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "CRM 🚀", "tab\there", "bell\x07",
                                  "zero\u200bwidth"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        policy.clean_name(name)
    assert caught.value.details["field"] == "name"


def test_names_are_trimmed_and_may_use_any_script() -> None:
    assert policy.clean_name("  CRM  Integration - Production ") == "CRM Integration - Production"
    assert policy.clean_name("Zürich – 東京 (prod)") == "Zürich – 東京 (prod)"


def test_a_10kb_name_is_refused_with_its_length() -> None:
    with pytest.raises(ValidationFailed, match="10000 characters"):
        policy.clean_name("n" * 10_000)


@pytest.mark.parametrize(("entry", "expected"), [
    ("203.0.113.7", "203.0.113.7/32"),
    ("203.0.113.0/24", "203.0.113.0/24"),
    ("2001:db8::/32", "2001:db8::/32"),
    ("2001:DB8::1", "2001:db8::1/128"),
    (" 10.0.0.0/8 ", "10.0.0.0/8"),
])
def test_cidrs_are_canonical(entry: str, expected: str) -> None:
    assert policy.clean_allowlist([entry]) == [expected]


@pytest.mark.parametrize(("entry", "fragment"), [
    ("10.0.0.1/33", "has the prefix length /33; an IPv4 block allows /0 to /32"),
    ("10.0.0.256", "not an IP address"),
    ("10.0.0.5/24", "Did you mean 10.0.0.0/24"),
    ("2001:db8::1/32", "Did you mean 2001:db8::/32"),
    ("", "empty"),
    ("localhost", "not an IP address"),
    ("2001:db8::/200", "an IPv6 block allows /0 to /128"),
])
def test_cidr_typos_get_specific_errors(entry: str, fragment: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        policy.clean_allowlist([entry])
    assert fragment in caught.value.message + caught.value.hint


def test_duplicate_cidrs_collapse_and_huge_lists_are_refused() -> None:
    assert policy.clean_allowlist(["10.0.0.1", "10.0.0.1/32"]) == ["10.0.0.1/32"]
    with pytest.raises(ValidationFailed, match="at most 100"):
        policy.clean_allowlist([f"10.0.{i // 256}.{i % 256}" for i in range(101)])


def test_unknown_scopes_are_named() -> None:
    with pytest.raises(ValidationFailed, match="employees:delete"):
        policy.clean_scopes(["employees:read", "employees:delete"])
    assert policy.clean_scopes(["employees:write", "employees:read", "employees:read"]) == [
        "employees:read", "employees:write"]


def test_expiry_is_mandatory() -> None:
    with pytest.raises(ValidationFailed, match="required"):
        policy.resolve_expiry(NOW, expires_at=None, expires_in_days=None, max_validity_days=365)


@pytest.mark.parametrize("days", [7, 30, 60, 90, 365])
def test_presets_are_accepted(days: int) -> None:
    assert policy.resolve_expiry(NOW, expires_at=None, expires_in_days=days,
                                 max_validity_days=365) == NOW + timedelta(days=days)


def test_expiry_beyond_the_account_maximum_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="maximum validity of 30 days"):
        policy.resolve_expiry(NOW, expires_at=None, expires_in_days=31, max_validity_days=30)
    with pytest.raises(ValidationFailed, match="maximum validity"):
        policy.resolve_expiry(NOW, expires_at=date(2031, 1, 2), expires_in_days=None,
                              max_validity_days=365)


def test_a_date_means_through_that_day_and_the_last_allowed_day_is_accepted() -> None:
    expiry = policy.resolve_expiry(NOW, expires_at=date(2030, 1, 31), expires_in_days=None,
                                   max_validity_days=365)
    assert expiry == datetime(2030, 2, 1, tzinfo=UTC)
    last = policy.resolve_expiry(NOW, expires_at=date(2031, 1, 1), expires_in_days=None,
                                 max_validity_days=365)
    assert last == NOW + timedelta(days=365)


@pytest.mark.parametrize("moment", [date(2029, 12, 31), datetime(2030, 1, 1, 11, 59, tzinfo=UTC),
                                    NOW])
def test_past_expiry_is_refused(moment: date) -> None:
    with pytest.raises(ValidationFailed, match="in the past"):
        policy.resolve_expiry(NOW, expires_at=moment, expires_in_days=None,
                              max_validity_days=365)


@pytest.mark.parametrize("days", [0, -1, True])
def test_nonsense_day_counts_are_refused(days: int) -> None:
    with pytest.raises(ValidationFailed):
        policy.resolve_expiry(NOW, expires_at=None, expires_in_days=days, max_validity_days=365)


def test_both_expiry_forms_at_once_are_refused() -> None:
    with pytest.raises(ValidationFailed, match="not both"):
        policy.resolve_expiry(NOW, expires_at=date(2030, 2, 1), expires_in_days=7,
                              max_validity_days=365)


def test_long_validity_warns_but_does_not_refuse() -> None:
    assert policy.validity_warnings(NOW, NOW + timedelta(days=90)) == []
    [warning] = policy.validity_warnings(NOW, NOW + timedelta(days=91))
    assert "3 months" in warning


@pytest.mark.parametrize("grace", [-1, 604801, True])
def test_grace_outside_seven_days_is_refused(grace: int) -> None:
    with pytest.raises(ValidationFailed, match="between 0 and 604800"):
        policy.check_grace(grace)


def test_a_pasted_token_is_refused_in_names_and_descriptions() -> None:
    from tallykey.tokens import format as token_format

    token = str(token_format.generate("eu1"))
    with pytest.raises(ValidationFailed, match="looks like a tallykey token"):
        policy.clean_name(f"CRM {token}")
    with pytest.raises(ValidationFailed, match="looks like a tallykey token"):
        policy.clean_description(f"used by the CRM, key={token}")
