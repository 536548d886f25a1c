"""The verifier and imported keys (SPEC §16): a foreign-format credential is looked up by
its SHA-256 only while imported keys exist, through the same positive and negative cache
as a native token; a cached imported key is answered by the hot path alone."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tallykey.auth.verifier import Verifier
from tallykey.runtime import Runtime
from tallykey.tokens.imports import ImportItem
from tallykey.tokens.requests import TokenDraft

from ..conftest import World

IP = "198.51.100.20"


@pytest.fixture
def verifier(rt: Runtime) -> Iterator[Verifier]:
    made = Verifier(settings=rt.settings, database=rt.database, clock=rt.clock,
                    background=False)
    yield made
    made.close()


def test_without_imports_foreign_credentials_are_refused_offline(
        verifier: Verifier, world: World) -> None:
    garbage = "Bearer legacy_" + secrets.token_urlsafe(24)
    first = verifier.verify(garbage, IP)
    assert not first.allowed and first.reason == "malformed"
    loads = verifier.loads
    for _ in range(20):
        assert verifier.verify("Bearer legacy_" + secrets.token_urlsafe(24), IP).reason == (
            "malformed")
    assert verifier.loads == loads  # no store look-up for any of them


def test_an_imported_key_takes_the_cache_and_unknown_ones_the_negative_cache(
        verifier: Verifier, world: World, rt: Runtime) -> None:
    key = "legacy_" + secrets.token_urlsafe(24)
    rt.tokens.import_keys(world.as_admin, [ImportItem(
        key=key, name="legacy", expires_in_days=30, scopes=["employees:read"])])
    native = rt.tokens.issue(world.as_admin, TokenDraft(
        name="native", expires_in_days=30, scopes=["employees:read"], kind="application"))
    for header in (f"Bearer {key}", f"Bearer {native.value}"):
        assert verifier.verify(header, IP, ("employees:read",)).allowed
        loads = verifier.loads
        hit = verifier.verify_cached(header, IP, ("employees:read",))
        assert hit is not None and hit.allowed and hit.kind in ("imported", "application")
        assert verifier.loads == loads

    unknown = "Bearer legacy_" + secrets.token_urlsafe(24)
    loads = verifier.loads
    for _ in range(5):
        refused = verifier.verify(unknown, IP)
        assert not refused.allowed and refused.reason == "unknown"
    assert verifier.loads == loads + 1  # once, then the negative cache answers

    # Native diagnostics are untouched: a tallykey token with a typo is still refused
    # offline with its precise reason, never looked up.
    typo = native.value[:-1] + ("A" if native.value[-1] != "A" else "B")
    assert verifier.verify(f"Bearer {typo}", IP).reason == "malformed"
    assert verifier.loads == loads + 1


def test_keys_that_arrive_while_the_store_is_asked_about_imports_wait_for_its_answer(
        verifier: Verifier, world: World, rt: Runtime) -> None:
    """The first foreign credentials after keys were imported, several at once: the one
    that asks the store whether imported keys exist holds the others until it has the
    answer, so none of them is refused as malformed meanwhile (seen with four clients on
    a node: the first requests of imported keys answered 401 `malformed`)."""
    keys = ["legacy_" + secrets.token_urlsafe(24) for _ in range(4)]
    rt.tokens.import_keys(world.as_admin, [
        ImportItem(key=key, name=f"legacy {n}", expires_in_days=30)
        for n, key in enumerate(keys)])
    asking, answer = threading.Event(), threading.Event()
    real_run = verifier.lookup.run

    def held_run(sql: str, params: Mapping[str, Any]) -> list[Any]:
        if sql == verifier._imports_sql:  # the question under test: held until released
            asking.set()
            assert answer.wait(10)
        return real_run(sql, params)

    verifier.lookup.run = held_run  # type: ignore[method-assign]
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(verifier.verify, f"Bearer {keys[0]}", IP)
        assert asking.wait(10)
        others = [pool.submit(verifier.verify, f"Bearer {key}", IP) for key in keys[1:]]
        answer.set()
        verdicts = [first.result(10)] + [other.result(10) for other in others]
    assert [v.reason for v in verdicts if not v.allowed] == []
    assert all(v.allowed and v.kind == "imported" for v in verdicts)
