"""The one set of password rules, used by every way a password is set."""

from __future__ import annotations

import pytest

from tallykey.accounts import bootstrap as setup
from tallykey.accounts import passwords
from tallykey.accounts.passwords import MIN_PASSWORD_LENGTH, check_rules, hash_password
from tallykey.errors import ValidationFailed

from ..conftest import World


def test_the_minimum_length_is_one_value_used_by_setup_too() -> None:
    short = "x7!" * 3 + "ab"  # 11 characters
    assert len(short) == MIN_PASSWORD_LENGTH - 1
    with pytest.raises(ValidationFailed, match=f"at least {MIN_PASSWORD_LENGTH}"):
        check_rules(short)
    with pytest.raises(ValidationFailed, match=f"at least {MIN_PASSWORD_LENGTH}"):
        setup.check(setup.FirstAdmin("Acme", "a@acme.test", short))
    check_rules(short + "z")  # one more character passes


def test_the_shipped_common_passwords_list_is_checked_case_insensitively() -> None:
    assert len(passwords.common_passwords()) > 19_000  # the list ships with the package
    for common in ("1q2w3e4r5t6y", "123456QWERTY", " 1234567890qwertyuiop "):
        with pytest.raises(ValidationFailed, match="commonly used") as refused:
            check_rules(common)
        assert refused.value.details["field"] == "password"
    with pytest.raises(ValidationFailed, match="commonly used"):
        setup.check(setup.FirstAdmin("Acme", "a@acme.test", "1q2w3e4r5t6y"))
    check_rules("plum tractor lantern")


def test_the_password_may_not_be_the_email() -> None:
    with pytest.raises(ValidationFailed, match="e-mail"):
        check_rules("Jane.Doe.1984@acme.test", email="jane.doe.1984@acme.test")
    with pytest.raises(ValidationFailed, match="e-mail"):
        check_rules("jane.doe.1984", email="jane.doe.1984@acme.test")


def test_creating_a_user_applies_the_rules(world: World) -> None:
    with pytest.raises(ValidationFailed, match="commonly used"):
        world.rt.accounts.create_user(world.as_admin, "p@acme.test", password="123qweasdzxc")
    assert hash_password("plum tractor lantern").startswith("$argon2id$")


def test_production_hashes_use_rfc_9106_and_any_profile_verifies_any_hash() -> None:
    from tallykey.settings import Settings

    assert Settings.model_fields["argon2_profile"].default == "RFC_9106_LOW_MEMORY"
    cheap = hash_password("plum tractor lantern")  # this suite runs with CHEAPEST
    try:
        passwords.use_profile("RFC_9106_LOW_MEMORY")
        strong = hash_password("plum tractor lantern")
        assert strong.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
        assert passwords.check_password(cheap, "plum tractor lantern")
    finally:
        passwords.use_profile("CHEAPEST")
    assert passwords.check_password(strong, "plum tractor lantern")
    assert not passwords.check_password(strong, "plum tractor lanterns")
