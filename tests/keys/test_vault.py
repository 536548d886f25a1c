"""Retrievable application tokens: envelope encryption, retrieval rules, key rotation."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text, update

from tallykey.accounts.service import PolicyChanges
from tallykey.actor import Actor
from tallykey.audit.models import AuditEvent
from tallykey.clock import FrozenClock
from tallykey.errors import (
    KeyConfigError,
    NotFound,
    PermissionDenied,
    TamperedCiphertext,
    ValidationFailed,
)
from tallykey.keys.keyring import parse_keyring
from tallykey.keys.models import AccountKey
from tallykey.notify.models import OutboxMessage
from tallykey.runtime import Runtime
from tallykey.settings import Settings
from tallykey.tokens.models import TokenSecret
from tallykey.tokens.requests import TokenDraft

from ..conftest import World


def new_key(key_id: str) -> str:
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


OLD, NEW = new_key("old"), new_key("new")


def runtime_with(settings: Settings, clock: FrozenClock, kek: str | None) -> Runtime:
    return Runtime.build(settings.model_copy(update={"kek": kek}), clock)


@pytest.fixture
def keyed(settings: Settings, clock: FrozenClock) -> Iterator[Runtime]:
    runtime = runtime_with(settings, clock, OLD)
    yield runtime
    runtime.close()


@pytest.fixture
def kworld(keyed: Runtime) -> World:
    world = World(keyed)
    keyed.accounts.update_policies(world.as_admin, PolicyChanges(
        retrievable_application_tokens=True))
    return world


def app_token(world: World, **extra: Any) -> Any:
    return world.rt.tokens.issue(world.as_admin, TokenDraft(
        name="Data export", kind="application", scopes=["employees:read"], target="Excel",
        expires_in_days=30, **extra))


def test_retrieval_round_trips_and_is_audited_and_announced(kworld: World) -> None:
    issued = app_token(kworld)
    again = kworld.rt.tokens.retrieve_secret(kworld.as_admin, issued.token.id)
    assert again.value == issued.value
    assert again.secret.prefix == issued.secret.prefix
    with kworld.rt.database.reading() as session:
        audit = session.scalars(select(AuditEvent).where(
            AuditEvent.action == "token.secret_retrieved")).all()
        mails = session.scalars(select(OutboxMessage).where(
            OutboxMessage.event == "token.secret_retrieved")).all()
    assert len(audit) == 1 and audit[0].actor_id == kworld.admin.id
    assert issued.value not in repr(audit[0].details)
    assert all(issued.value not in (m.body or "") for m in mails)


def test_ciphertexts_differ_per_token_and_never_hold_the_secret(kworld: World) -> None:
    first, second = app_token(kworld), app_token(kworld)
    with kworld.rt.database.reading() as session:
        rows = {r.token_id: r for r in session.scalars(select(TokenSecret))}
        data_keys = session.scalars(select(AccountKey)).all()
    one, two = rows[first.token.id].ciphertext, rows[second.token.id].ciphertext
    assert one and two and one != two
    for issued, blob in ((first, one), (second, two)):
        assert issued.value.encode() not in blob and issued.secret.secret.encode() not in blob
    assert len(data_keys) == 1 and data_keys[0].kek_id == "old"
    assert parse_keyring(OLD).current not in data_keys[0].wrapped


def test_tampering_is_detected(kworld: World) -> None:
    first, second = app_token(kworld), app_token(kworld)
    with kworld.rt.database.transaction() as session:
        row = session.scalars(select(TokenSecret).where(
            TokenSecret.token_id == first.token.id)).one()
        other = session.scalars(select(TokenSecret).where(
            TokenSecret.token_id == second.token.id)).one()
        assert row.ciphertext is not None and other.ciphertext is not None
        flipped = bytearray(row.ciphertext)
        flipped[-1] ^= 1
        session.execute(update(TokenSecret).where(TokenSecret.id == row.id)
                        .values(ciphertext=bytes(flipped)))
        session.execute(update(TokenSecret).where(TokenSecret.id == other.id)
                        .values(ciphertext=row.ciphertext))  # moved from another row
    for issued in (first, second):
        with pytest.raises(TamperedCiphertext):
            kworld.rt.tokens.retrieve_secret(kworld.as_admin, issued.token.id)


def test_retrieval_is_refused_where_it_should_be(kworld: World, keyed: Runtime) -> None:
    issued = app_token(kworld)
    personal = kworld.rt.tokens.issue(kworld.as_admin, TokenDraft(name="p",
                                                                  expires_in_days=7))
    with pytest.raises(PermissionDenied, match="administrators"):
        kworld.rt.tokens.retrieve_secret(kworld.as_member, issued.token.id)
    with pytest.raises(NotFound, match="Personal tokens"):
        kworld.rt.tokens.retrieve_secret(kworld.as_admin, personal.token.id)
    with pytest.raises(NotFound):
        kworld.rt.tokens.retrieve_secret(kworld.as_other_admin, issued.token.id)
    kworld.rt.accounts.update_policies(kworld.as_admin, PolicyChanges(
        retrievable_application_tokens=False))
    with pytest.raises(PermissionDenied, match="off for this account"):
        kworld.rt.tokens.retrieve_secret(kworld.as_admin, issued.token.id)
    with kworld.rt.database.reading() as session:
        assert session.scalar(text("SELECT count(*) FROM token_secrets "
                                   "WHERE ciphertext IS NOT NULL")) == 0
        assert session.scalar(text("SELECT count(*) FROM account_keys")) == 0
    kworld.rt.accounts.update_policies(kworld.as_admin, PolicyChanges(
        retrievable_application_tokens=True))
    with pytest.raises(NotFound, match="while retrievable application tokens were off"):
        kworld.rt.tokens.retrieve_secret(kworld.as_admin, issued.token.id)
    rotated = kworld.rt.tokens.rotate(kworld.as_admin, issued.token.id)
    assert kworld.rt.tokens.retrieve_secret(kworld.as_admin, issued.token.id
                                            ).value == rotated.value


def test_the_switch_needs_a_key(world: World) -> None:
    with pytest.raises(ValidationFailed, match="key-encryption key"):
        world.rt.accounts.update_policies(world.as_admin, PolicyChanges(
            retrievable_application_tokens=True))


def test_a_missing_or_wrong_key_stops_the_start(kworld: World, settings: Settings,
                                                clock: FrozenClock) -> None:
    app_token(kworld)
    for kek, fragment in ((None, "no key-encryption key"), (new_key("old"), "is wrong"),
                          (NEW, "'old', which is not in TALLYKEY_KEK")):
        runtime = runtime_with(settings, clock, kek)
        try:
            with pytest.raises(KeyConfigError, match=fragment):
                runtime.check_keys()
        finally:
            runtime.close()


def test_rotation_rewraps_everything_and_resumes_after_a_crash(
        kworld: World, settings: Settings, clock: FrozenClock) -> None:
    issued = [app_token(kworld) for _ in range(2)]
    globex = Actor.operator(kworld.globex_id)
    kworld.rt.accounts.update_policies(globex, PolicyChanges(
        retrievable_application_tokens=True))
    other = kworld.rt.tokens.issue(kworld.actor("admin@globex.test"), TokenDraft(
        name="g", kind="application", scopes=["employees:read"], expires_in_days=9))
    both = runtime_with(settings, clock, f"{NEW},{OLD}")
    try:
        def crash_after_first(done: int, total: int) -> None:
            raise KeyboardInterrupt("killed")

        with pytest.raises(KeyboardInterrupt):
            assert both.vault is not None
            both.vault.rotate(crash_after_first)
        with both.database.reading() as session:
            assert sorted(session.scalars(select(AccountKey.kek_id))) == ["new", "old"]
        for token in (*issued, other):  # mid-rotation: both keys still open everything
            owner = kworld.as_admin if token is not other else globex
            assert both.tokens.retrieve_secret(owner, token.token.id).value == token.value
        assert both.vault is not None and both.vault.rotate() == 1
        assert both.vault.rotate() == 0
    finally:
        both.close()
    only_new = runtime_with(settings, clock, NEW)
    try:
        only_new.check_keys()
        assert only_new.tokens.retrieve_secret(kworld.as_admin, issued[0].token.id
                                               ).value == issued[0].value
    finally:
        only_new.close()


def test_verification_never_needs_the_key(kworld: World, settings: Settings,
                                          clock: FrozenClock) -> None:
    from tallykey.auth.verifier import Verifier

    issued = app_token(kworld)
    verifier = Verifier(settings=settings.model_copy(update={"kek": None}), clock=clock,
                        background=False)
    try:
        assert verifier.verify(f"Bearer {issued.value}", "198.51.100.1").allowed
    finally:
        verifier.close()


def test_keyring_parsing_errors_are_specific() -> None:
    for text_value, fragment in (("", "empty"), ("nokey", "no valid key id"),
                                 ("k1:notbase64!", "not valid base64"),
                                 ("k1:" + base64.b64encode(b"short").decode(), "32"),
                                 (f"{OLD},{OLD}", "twice")):
        with pytest.raises(KeyConfigError, match=fragment):
            parse_keyring(text_value)
    ring = parse_keyring(f"{NEW},{OLD}")
    assert ring.current_id == "new" and "new" in repr(ring)
    assert base64.b64encode(ring.current).decode() not in repr(ring)
