"""How audit details read on a console page: for people, not Python's notation."""

from __future__ import annotations

from tallykey.console.views import describe, shown


def test_changes_read_old_to_new_and_values_read_as_words() -> None:
    assert describe("token.updated", {
        "prefix": "tlk_eu1_abc", "name": ["CRM", "CRM (prod)"],
        "ip_allowlist": [[], ["10.0.0.0/8", "::1/128"]], "target": [None, "Excel"],
        "expires_at": ["2030-02-01T12:00:00+00:00", "2030-01-20T00:00:00+00:00"],
    }) == [("name", "CRM → CRM (prod)"), ("ip allowlist", "none → 10.0.0.0/8, ::1/128"),
           ("target", "— → Excel"),
           ("expires at", "2030-02-01 12:00 UTC → 2030-01-20 00:00 UTC")]
    assert describe("token.created", {"scopes": ["a", "b"], "kind": "personal"}) == [
        ("scopes", "a, b"), ("kind", "personal")]
    assert describe("user.updated", {"active": [True, False]}) == [("active", "yes → no")]
    assert describe("account.policy_changed", {
        "before": {"max_validity_days": 365, "reminder_days": [7, 2]},
        "after": {"max_validity_days": 30, "reminder_days": [7, 2]},
    }) == [("max validity days", "365 → 30")]
    for value in (None, True, ["a"], {"k": None}):
        assert not any(bit in shown(value) for bit in ("None", "True", "[", "{"))


def test_durations_read_as_days_and_hours() -> None:
    assert describe("token.rotated", {"grace_seconds": 86400, "generation": 2}) == [
        ("grace", "1 day"), ("generation", "2")]
    assert describe("token.rotated", {"grace_seconds": 0}) == [("grace", "none")]
    assert describe("token.rotated", {"grace_seconds": 7200}) == [("grace", "2 hours")]
