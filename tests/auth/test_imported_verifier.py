"""The verifier and imported keys (SPEC §16): a foreign-format credential is looked up by
its SHA-256 only while imported keys exist, through the same positive and negative cache
as a native token; a cached imported key is answered by the hot path alone."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tallykey.auth.verifier import Verifier
from tallykey.runtime import Runtime
from tallykey.tokens.imports import ImportItem
from tallykey.tokens.service import TokenDraft

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
