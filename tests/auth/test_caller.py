"""The one credential reader (`presented`) and the refusal every surface answers with
(`RefusalResponse`), without a store."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tallykey.auth.caller import REFUSAL_HEADER, RefusalResponse, presented
from tallykey.auth.verdict import Verdict
from tallykey.errors import UnknownToken


def scope(headers: list[tuple[bytes, bytes]], query: bytes = b"") -> dict[str, Any]:
    return {"type": "http", "path": "/", "headers": headers, "query_string": query}


def test_one_authorization_header_is_the_credential() -> None:
    header = b"Bearer tlk_live_abc"
    assert presented(scope([(b"authorization", header)]), [header]) == "Bearer tlk_live_abc"


def test_no_credential_at_all_is_none() -> None:
    assert presented(scope([(b"accept", b"*/*")]), []) is None


@pytest.mark.parametrize(("query", "headers", "authorizations", "status", "words"), [
    (b"access_token=x", [], [], 400, "never in a URL"),
    (b"ACCESS%5FTOKEN=x", [], [b"Bearer t"], 400, "never in a URL"),
    (b"", [], [b"Bearer a", b"Bearer b"], 400, "More than one"),
    (b"", [(b"x-api-key", b"tlk_x")], [], 401, "X-API-Key"),
])
def test_a_credential_where_none_belongs_is_refused(
        query: bytes, headers: list[tuple[bytes, bytes]], authorizations: list[bytes],
        status: int, words: str) -> None:
    refused = presented(scope(headers, query), authorizations)
    assert isinstance(refused, Verdict) and not refused.allowed
    assert refused.status == status and words in refused.message


def test_the_refusal_carries_status_challenge_and_one_line_of_json() -> None:
    verdict = Verdict.refused(UnknownToken("No such token — check it.", "Create one."))
    response = RefusalResponse(verdict, [(b"x-extra", b"1")], body_in_header=True)
    headers = dict(response.raw_headers)
    body = bytes(response.body)
    assert response.status_code == 401
    assert headers[b"www-authenticate"].startswith(b"Bearer")
    assert headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(body)
    assert headers[b"x-extra"] == b"1"
    assert headers[REFUSAL_HEADER] == body  # printable ASCII: a valid header
    assert body.isascii() and b"\n" not in body
    assert json.loads(body)["reason"] == verdict.reason == "unknown"
