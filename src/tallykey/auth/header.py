"""Parse an `Authorization` header into a token string, with a precise error for every
malformed form (RFC 6750 `invalid_request`, status 400) and a 401 challenge when absent.

Accepted forms:
    Bearer <token>
    Basic base64(<username>:<password>)   (application tokens: username + password = token)
    Basic base64(<token>:)                (`curl -u tlk_…:`: the token as username, Stripe's
                                           habit; `:<token>` works too)
    Basic <token>                         (the raw token in the Basic scheme)
Scheme names are case-insensitive (RFC 7235).
"""

from __future__ import annotations

import base64
import binascii

from tallykey.errors import MalformedHeader, MissingCredentials
from tallykey.tokens.format import PRODUCT_PREFIX

MAX_CREDENTIALS_LENGTH = 1024
MAX_SCHEME_SHOWN = 20  # longer "schemes" are not echoed: they may be a secret
BEARER_FORM = "Authorization: Bearer <token>"
BASIC_FORM = "Authorization: Basic <token> or Basic base64(<username>:<password>)"
EXPECTED_FORMS = f"{BEARER_FORM}, or {BASIC_FORM}"


def extract_token(authorization: str | None) -> str:
    """The token string carried by the header; raises `MissingCredentials` or
    `MalformedHeader`. The token itself is checked later (`tokens.format.parse`)."""
    if authorization is None or authorization == "":
        raise MissingCredentials(
            "The Authorization header is missing.",
            f"Send the token on every request: {BEARER_FORM}",
        )
    if len(authorization) > MAX_CREDENTIALS_LENGTH:
        raise _malformed(f"The Authorization header is {len(authorization)} characters long; "
                         "a tallykey token is far shorter.")
    if authorization != authorization.strip():
        raise _malformed("The Authorization header has leading or trailing whitespace.")
    scheme, space, credentials = authorization.partition(" ")
    lowered = scheme.lower()
    if not space:
        return _without_space(authorization)
    if lowered not in ("bearer", "basic"):
        if scheme.isascii() and scheme.isalpha() and len(scheme) <= MAX_SCHEME_SHOWN:
            raise _malformed(f"Unsupported authorization scheme {scheme!r}.")
        # not a scheme name at all (a token or password before a space): never echoed
        raise _malformed("The Authorization header does not start with a scheme "
                         "(Bearer or Basic).")
    if credentials == "" or credentials.startswith((" ", "\t")) or "  " in authorization:
        raise _malformed(f"Exactly one space must separate {scheme!r} from the token.")
    if any(ch.isspace() for ch in credentials) or "," in credentials:
        raise _malformed("The Authorization header carries more than one credential "
                         "(or whitespace inside the token).")
    if lowered == "bearer":
        return credentials
    return _from_basic(credentials)


#: Headers other APIs read a key from; tallykey reads only `Authorization`.
OTHER_TOKEN_HEADERS = {name.lower(): name for name in (
    "X-API-Key", "API-Key", "ApiKey", "X-Auth-Token", "X-Access-Token", "X-Token", "Token",
    "Access-Token", "X-Tallykey-Token")}


def missing_header(other_headers: list[str]) -> MissingCredentials:
    """No Authorization header. When the token came in another header (`X-API-Key`…),
    say so: tallykey reads only `Authorization`, and give its exact form."""
    if other_headers:
        return MissingCredentials(
            f"The token was sent in the {other_headers[0]} header; tallykey reads only the "
            "Authorization header.",
            f"Send the same token as: {BEARER_FORM}")
    return MissingCredentials("The Authorization header is missing.",
                              f"Send the token on every request: {BEARER_FORM}")


def token_headers_present(header_names: list[str]) -> list[str]:
    """The usual spelling of each header that looks like a misplaced token header."""
    return [OTHER_TOKEN_HEADERS[name.lower()] for name in header_names
            if name.lower() in OTHER_TOKEN_HEADERS]


def _without_space(authorization: str) -> str:
    lowered = authorization.lower()
    for scheme in ("Bearer", "Basic"):
        if lowered.startswith(scheme.lower()) and len(authorization) > len(scheme):
            raise _malformed(f"There is no space after {scheme!r}.")
        if lowered == scheme.lower():
            raise _malformed(f"The {scheme!r} scheme is present but the token is missing.")
    if authorization.startswith(PRODUCT_PREFIX):
        raise _malformed("The token was sent without a scheme.")
    raise _malformed("The Authorization header has no scheme and credentials.")


def _from_basic(credentials: str) -> str:
    if credentials.startswith(PRODUCT_PREFIX):
        return credentials  # the raw token in the Basic scheme
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _malformed(
            "The Basic credentials are neither a tallykey token nor valid base64."
        ) from None
    username, colon, password = decoded.partition(":")
    if not colon:
        if decoded.startswith(PRODUCT_PREFIX):
            return decoded  # base64 of the bare token: accepted as well
        raise _malformed("The decoded Basic credentials have no ':' between username and "
                         "password.")
    if username.startswith(PRODUCT_PREFIX) and not password:
        return username  # `curl -u tlk_…:`: the whole token as the username
    if password.startswith(PRODUCT_PREFIX) and not username:
        return password  # `curl -u :tlk_…`: the whole token as the password
    if not username or not password:
        raise _malformed("The Basic credentials have an empty username or password.")
    if not username.startswith(PRODUCT_PREFIX):
        raise _malformed("The Basic username is not a tallykey token username (tlk_…).")
    return username + password


def _malformed(message: str) -> MalformedHeader:
    return MalformedHeader(message, f"Expected exactly: {EXPECTED_FORMS}.")
