"""Console passwords: the one set of rules (length, not a common password), and argon2id
hashing, never on the token verification path.

`common-passwords.txt.gz` beside this file is the list of 20,000 common passwords compiled
by Royce Williams, as shipped (BSD licence) by Django's `django.contrib.auth`.
"""

from __future__ import annotations

import gzip
import logging
from functools import cache
from importlib import resources

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError

from tallykey.errors import ValidationFailed

#: The only minimum length: setup, user creation, change, reset and the CLI all use it.
MIN_PASSWORD_LENGTH = 12
#: Bounds the argon2 work one request can ask for.
MAX_PASSWORD_LENGTH = 1000
COMMON_PASSWORDS_FILE = "common-passwords.txt.gz"

log = logging.getLogger(__name__)

#: argon2id with RFC 9106's recommended parameters for memory-constrained machines (the
#: library's default), unless `use_profile` chose others (`TALLYKEY_ARGON2_PROFILE`).
_profile = "RFC_9106_LOW_MEMORY"
_hasher = PasswordHasher.from_parameters(profiles.RFC_9106_LOW_MEMORY)
#: A real hash of the current profile to verify against when the user does not exist, so
#: timing does not tell; made at the first check, not at import (every CLI call and node
#: start would pay a full hash for it), and again when the profile changes.
_dummy_hash: str | None = None


def use_profile(name: str) -> None:
    """Hash new passwords with one of argon2-cffi's profiles. Hashes carry their own
    parameters, so existing ones keep verifying under any profile."""
    global _profile, _hasher, _dummy_hash
    if name == _profile:
        return
    if name == "CHEAPEST":
        log.warning("TALLYKEY_ARGON2_PROFILE=CHEAPEST: password hashes are cheap to crack; "
                    "use it for test suites only")
    _profile, _hasher = name, PasswordHasher.from_parameters(getattr(profiles, name))
    _dummy_hash = None


def _timing_equaliser() -> str:
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash("tallykey-timing-equaliser")
    return _dummy_hash


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords, lowercased."""
    data = resources.files("tallykey.accounts").joinpath(COMMON_PASSWORDS_FILE).read_bytes()
    return frozenset(line.strip().lower()
                     for line in gzip.decompress(data).decode().splitlines() if line.strip())


def check_rules(password: str, *, email: str | None = None) -> None:
    """`ValidationFailed` (field `password`) when `password` breaks a rule; else None."""
    hint = "A few unrelated words make a long password that is easy to remember."
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(
            f"The password must be at least {MIN_PASSWORD_LENGTH} characters long.", hint,
            field="password")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationFailed(
            f"The password must be at most {MAX_PASSWORD_LENGTH} characters long.",
            field="password")
    folded = password.strip().lower()
    if folded in common_passwords():
        raise ValidationFailed("This password is on a list of commonly used passwords.", hint,
                               field="password")
    if email and folded in {email.lower(), email.lower().partition("@")[0]}:
        raise ValidationFailed("The password must not be your e-mail address.", hint,
                               field="password")


def hash_password(password: str, *, email: str | None = None) -> str:
    """The argon2id hash of `password`, once it passed `check_rules`."""
    check_rules(password, email=email)
    return _hasher.hash(password)


def check_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches; takes the same time when there is no hash at all."""
    if len(password) > MAX_PASSWORD_LENGTH:
        password = password[:MAX_PASSWORD_LENGTH]
    try:
        return (_hasher.verify(password_hash or _timing_equaliser(), password)
                and bool(password_hash))
    except (VerificationError, InvalidHashError):
        return False
