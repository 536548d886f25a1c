"""Console passwords: the one set of rules (length, not a common password), and argon2id
hashing, never on the token verification path.

`common-passwords.txt.gz` beside this file is the list of 20,000 common passwords compiled
by Royce Williams, as shipped (BSD licence) by Django's `django.contrib.auth`.
"""

from __future__ import annotations

import gzip
from functools import cache
from importlib import resources

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from tallykey.errors import ValidationFailed

#: The only minimum length: setup, user creation, change, reset and the CLI all use it.
MIN_PASSWORD_LENGTH = 12
#: Bounds the argon2 work one request can ask for.
MAX_PASSWORD_LENGTH = 1000
COMMON_PASSWORDS_FILE = "common-passwords.txt.gz"

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# A real hash to verify against when the user does not exist, so timing does not tell.
_DUMMY_HASH = _hasher.hash("tallykey-timing-equaliser")


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
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False
