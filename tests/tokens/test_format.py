"""Token strings: every issued token parses; every corruption is caught offline."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tallykey.errors import TokenFormatError
from tallykey.tokens import format as token_format

PROBLEMS = {"empty", "whitespace", "prefix", "region", "characters", "length", "checksum"}
regions = st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True)


@st.composite
def issued(draw: st.DrawFn) -> str:
    return str(token_format.generate(draw(regions)))


@given(issued())
def test_every_issued_token_parses_back(token: str) -> None:
    parsed = token_format.parse(token)
    assert str(parsed) == token
    assert parsed.prefix + parsed.password == token
    assert token_format.TOKEN_PATTERN.fullmatch(token)


@given(issued(), st.data())
def test_every_single_character_change_is_rejected(token: str, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.characters().filter(lambda ch: ch != token[index]))
    altered = token[:index] + replacement + token[index + 1 :]
    with pytest.raises(TokenFormatError) as caught:
        token_format.parse(altered)
    assert caught.value.problem in PROBLEMS


@given(issued(), st.data())
def test_every_truncation_is_rejected(token: str, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(token) - 1))
    from_start = data.draw(st.booleans())
    altered = token[cut:] if from_start and cut else token[:cut]
    with pytest.raises(TokenFormatError) as caught:
        token_format.parse(altered)
    assert caught.value.problem in PROBLEMS - {"whitespace", "characters"}


@given(issued(), st.data())
def test_added_whitespace_is_rejected_as_whitespace(token: str, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(token)))
    blank = data.draw(st.sampled_from([" ", "\t", "\n", "\r\n", "\u00a0", "\u2003"]))
    with pytest.raises(TokenFormatError) as caught:
        token_format.parse(token[:index] + blank + token[index:])
    assert caught.value.problem == "whitespace"


@given(issued(), st.data())
def test_inserted_base62_character_is_rejected_by_length(token: str, data: st.DataObject) -> None:
    body_start = token.index("_", 4) + 1
    index = data.draw(st.integers(body_start, len(token)))
    extra = data.draw(st.sampled_from(token_format.ALPHABET))
    with pytest.raises(TokenFormatError) as caught:
        token_format.parse(token[:index] + extra + token[index:])
    assert caught.value.problem == "length"


@settings(max_examples=500)
@given(st.text())
def test_parsing_arbitrary_text_raises_only_our_error(text: str) -> None:
    try:
        token_format.parse(text)
    except TokenFormatError as error:
        assert error.problem in PROBLEMS
        assert error.status == 401


def test_reasons_are_specific() -> None:
    token = str(token_format.generate("eu1"))
    cases = {
        "": "empty",
        " " + token: "whitespace",
        "ghp_" + token[4:]: "prefix",
        "tlk_EU1_" + token[8:]: "region",
        "tlk_" + token[8:]: "region",
        token[:-1] + "-": "characters",
        token[:-5]: "length",
        token + "A": "length",
        token[:-1] + ("A" if token[-1] != "A" else "B"): "checksum",
    }
    for value, reason in cases.items():
        with pytest.raises(TokenFormatError) as caught:
            token_format.parse(value)
        assert caught.value.problem == reason, value


def test_the_region_is_covered_by_the_checksum() -> None:
    token = str(token_format.generate("eu1"))
    with pytest.raises(TokenFormatError) as caught:
        token_format.parse(token.replace("tlk_eu1_", "tlk_us1_"))
    assert caught.value.problem == "checksum"


def test_secrets_are_unique_and_use_the_whole_alphabet() -> None:
    tokens = {str(token_format.generate("eu1")) for _ in range(2000)}
    assert len(tokens) == 2000
    seen = set("".join(t[8 + 12 : 8 + 12 + 43] for t in tokens))
    assert seen == set(string.digits + string.ascii_letters)


def test_repr_never_shows_the_secret() -> None:
    parsed = token_format.generate("eu1")
    assert parsed.secret not in repr(parsed)
    assert parsed.prefix in repr(parsed)


def test_hash_is_sha256_of_the_whole_token() -> None:
    parsed = token_format.generate("eu1")
    import hashlib

    assert parsed.secret_hash == hashlib.sha256(str(parsed).encode()).hexdigest()
