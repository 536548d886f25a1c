"""The token string: self-describing, checksummed, and parsed without a database.

    tlk_<region>_<public id: 12><secret: 43><checksum: 6>

* `tlk_` is a fixed product prefix so secret scanners can find leaked tokens.
* the region names the deployment that issued the token (`eu1`, `us1`, …).
* the public id (71 bits) is the token's stable, non-secret handle; `tlk_<region>_<id>`
  is the "prefix" shown in lists and the *username* of application tokens.
* the secret carries 256 bits of randomness (43 base62 characters).
* the checksum is CRC32 over everything before it, in 6 base62 characters, so a typo or a
  truncated copy is rejected offline with a precise reason.

Only SHA-256 of the whole token string is ever stored.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import zlib
from dataclasses import dataclass

from tallykey.errors import TokenFormatError

PRODUCT_PREFIX = "tlk_"
ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
PUBLIC_ID_LENGTH = 12
SECRET_LENGTH = 43
CHECKSUM_LENGTH = 6
BODY_LENGTH = PUBLIC_ID_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH
MAX_REGION_LENGTH = 8

#: The token grammar as a regular expression: the one definition every pattern builds on.
TOKEN_REGEX = r"tlk_[a-z0-9]{1,%d}_[0-9A-Za-z]{%d}" % (  # noqa: UP031 - regex braces
    MAX_REGION_LENGTH, BODY_LENGTH)
#: The pattern secret scanners use; published in the README.
TOKEN_PATTERN = re.compile(
    rf"\b{TOKEN_REGEX}\b",
    re.ASCII,  # word boundaries as Go's regexp (gitleaks, TruffleHog) draws them
)
_REGION = re.compile(r"[a-z0-9]{1,%d}" % MAX_REGION_LENGTH)  # noqa: UP031
_WELL_FORMED = re.compile(
    r"tlk_([a-z0-9]{1,8})_([0-9A-Za-z]{%d})([0-9A-Za-z]{%d})([0-9A-Za-z]{%d})"  # noqa: UP031
    % (PUBLIC_ID_LENGTH, SECRET_LENGTH, CHECKSUM_LENGTH)
)
_BASE62_CHARS = frozenset(ALPHABET)

_EXPECTED_FORM = (
    f"tlk_<region>_<{BODY_LENGTH} letters and digits>, e.g. tlk_eu1_ followed by "
    f"{BODY_LENGTH} characters"
)
_COPY_AGAIN = "Copy the token again from the console; check that nothing was cut off or added."


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A token string that passed every offline check."""

    region: str
    public_id: str
    secret: str
    checksum: str

    @property
    def prefix(self) -> str:
        """The public, non-secret part: what lists show and what Basic auth calls username."""
        return prefix(self.region, self.public_id)

    @property
    def password(self) -> str:
        """The secret part, as application tokens hand it out for HTTP Basic."""
        return self.secret + self.checksum

    def __str__(self) -> str:
        return self.prefix + self.password

    @property
    def secret_hash(self) -> str:
        return hash_token(str(self))

    def __repr__(self) -> str:  # never print the secret
        return f"ParsedToken(prefix={self.prefix!r})"


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a whole token string: what the store keeps and looks up."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def token_digest(token: str) -> bytes:
    """SHA-256 of a token as 32 raw bytes: the in-memory cache key (half a hex string)."""
    return hashlib.sha256(token.encode("ascii")).digest()


def prefix(region: str, public_id: str) -> str:
    """`tlk_<region>_<public id>`: a token's public name (lists, logs, Basic username)."""
    return f"{PRODUCT_PREFIX}{region}_{public_id}"


def checksum(payload: str) -> str:
    """CRC32 of `payload`, as exactly six base62 characters."""
    number, digits = zlib.crc32(payload.encode("ascii")), []
    while True:
        number, digit = divmod(number, 62)
        digits.append(ALPHABET[digit])
        if not number:
            break
    return "".join(reversed(digits)).rjust(CHECKSUM_LENGTH, "0")


def random_base62(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def new_public_id() -> str:
    return random_base62(PUBLIC_ID_LENGTH)


def generate(region: str, public_id: str | None = None) -> ParsedToken:
    """A fresh token for `region`; pass `public_id` to give an existing record a new secret."""
    if not _REGION.fullmatch(region):
        raise ValueError(f"region {region!r} must be 1-8 lowercase letters or digits")
    public_id = public_id or new_public_id()
    secret = random_base62(SECRET_LENGTH)
    payload = f"{PRODUCT_PREFIX}{region}_{public_id}{secret}"
    return ParsedToken(region, public_id, secret, checksum(payload))


def parse(token: str) -> ParsedToken:
    """Check a token string offline and split it, or raise `TokenFormatError` saying why.

    The error's `problem` is one of: empty, whitespace, prefix, region, characters,
    length, checksum. Nothing else is ever raised, whatever the input.
    """
    shaped = _WELL_FORMED.fullmatch(token)
    if shaped is not None:
        region, public_id, secret, given = shaped.groups()
        if not secrets.compare_digest(given, _checksum_of(region, public_id, secret)):
            raise _checksum_error()
        return ParsedToken(region, public_id, secret, given)
    return _diagnose(token)


def _diagnose(token: str) -> ParsedToken:
    """The slow path for input that is not shaped like a token: find the precise problem."""
    if not token:
        raise _format_error("empty", "The token is empty.", "Send the whole token.")
    if any(ch.isspace() for ch in token):
        raise _format_error(
            "whitespace",
            "The token contains whitespace (a space, tab or line break was added).",
            "Remove the extra whitespace; the token is one unbroken string.",
        )
    if not token.startswith(PRODUCT_PREFIX):
        raise _format_error(
            "prefix",
            f"This is not a tallykey token: tokens start with {PRODUCT_PREFIX!r}.",
            f"Expected form: {_EXPECTED_FORM}.",
        )
    region, sep, body = token[len(PRODUCT_PREFIX) :].partition("_")
    if not sep or not _REGION.fullmatch(region):
        raise _format_error(
            "region",
            "The token's region part is missing or malformed.",
            f"Expected form: {_EXPECTED_FORM}. {_COPY_AGAIN}",
        )
    if not all(ch in _BASE62_CHARS for ch in body):
        raise _format_error(
            "characters",
            "The token contains characters that never occur in a token.",
            f"Tokens use only letters and digits after the region. {_COPY_AGAIN}",
        )
    if len(body) != BODY_LENGTH:
        shape = "short" if len(body) < BODY_LENGTH else "long"
        raise _format_error(
            "length",
            f"The token is too {shape}: it was copied incompletely or altered "
            f"({len(body)} characters after the region, expected {BODY_LENGTH}).",
            _COPY_AGAIN,
        )
    public_id = body[:PUBLIC_ID_LENGTH]
    secret = body[PUBLIC_ID_LENGTH : PUBLIC_ID_LENGTH + SECRET_LENGTH]
    given = body[PUBLIC_ID_LENGTH + SECRET_LENGTH :]
    if not secrets.compare_digest(given, _checksum_of(region, public_id, secret)):
        raise _checksum_error()
    return ParsedToken(region, public_id, secret, given)


def _checksum_error() -> TokenFormatError:
    return _format_error(
        "checksum",
        "The token failed its checksum: it was copied incompletely or altered.",
        _COPY_AGAIN,
    )


def _checksum_of(region: str, public_id: str, secret: str) -> str:
    return checksum(f"{PRODUCT_PREFIX}{region}_{public_id}{secret}")


def _format_error(problem: str, message: str, hint: str) -> TokenFormatError:
    return TokenFormatError(message, hint, problem=problem)
