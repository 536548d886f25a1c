"""Authorization header parsing: accepted forms and a precise error for each bad one."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tallykey.auth.header import extract_token
from tallykey.errors import AuthenticationError, MalformedHeader, MissingCredentials
from tallykey.tokens import format as token_format

#: A fixed, well-formed token: test ids must be the same in every xdist worker.
TOKEN = "tlk_eu1_gtkj08Kfn59Zb57IdKAwQ8OfBPKsycT6CZnKbO06bQH73M0FCvHnwbZ1jmQCs"
PARSED = token_format.parse(TOKEN)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("header", [
    f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER {TOKEN}", f"Basic {TOKEN}",
    f"Basic {b64(PARSED.prefix + ':' + PARSED.password)}", f"basic {b64(TOKEN)}",
    f"Basic {b64(TOKEN + ':')}",  # curl -u tlk_…:  (Stripe's habit)
    f"Basic {b64(':' + TOKEN)}",  # curl -u :tlk_…
])
def test_accepted_forms_yield_the_token(header: str) -> None:
    assert extract_token(header) == TOKEN


@pytest.mark.parametrize("header", [None, ""])
def test_absent_header_is_missing_credentials(header: str | None) -> None:
    with pytest.raises(MissingCredentials) as caught:
        extract_token(header)
    assert caught.value.status == 401 and caught.value.code == ""


@pytest.mark.parametrize(("header", "fragment"), [
    (f"Bearer{TOKEN}", "no space after 'Bearer'"),
    (f"Basic{TOKEN}", "no space after 'Basic'"),
    ("Bearer", "token is missing"),
    (f"Bearer  {TOKEN}", "Exactly one space"),
    (f" Bearer {TOKEN}", "leading or trailing"),
    (f"Bearer {TOKEN} ", "leading or trailing"),
    (f"Bearer {TOKEN} {TOKEN}", "more than one credential"),
    (f"Bearer {TOKEN},x", "more than one credential"),
    (f"Token {TOKEN}", "Unsupported authorization scheme 'Token'"),
    (TOKEN, "without a scheme"),
    ("garbage", "no scheme"),
    ("Basic ###", "neither a tallykey token nor valid base64"),
    (f"Basic {b64('plain')}", "no ':'"),
    (f"Basic {b64('user:')}", "empty username or password"),
    (f"Basic {b64(':')}", "empty username or password"),
    (f"Basic {b64('someone:secret')}", "not a tallykey token username"),
    ("Bearer " + "a" * 5000, "far shorter"),
])
def test_malformed_headers_are_invalid_request(header: str, fragment: str) -> None:
    with pytest.raises(MalformedHeader) as caught:
        extract_token(header)
    assert caught.value.status == 400 and caught.value.code == "invalid_request"
    assert fragment in caught.value.message
    assert "Authorization: Bearer <token>" in caught.value.hint


@given(st.text(max_size=200))
def test_any_header_value_gives_a_token_or_our_own_error(value: str) -> None:
    try:
        extract_token(value)
    except AuthenticationError as error:
        assert error.status in (400, 401)


def test_a_token_in_another_header_is_named_with_the_form_to_use() -> None:
    from tallykey.auth.header import missing_header, token_headers_present

    found = token_headers_present(["host", "x-api-key", "user-agent"])
    assert found == ["X-API-Key"]
    error = missing_header(found)
    assert error.status == 401 and error.code == ""
    assert "X-API-Key" in error.message and "reads only the Authorization header" in \
        error.message
    assert error.hint.endswith("Authorization: Bearer <token>")
    assert missing_header([]).message == "The Authorization header is missing."
