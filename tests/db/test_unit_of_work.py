"""`Database.transaction` as a unit of work: nested calls join the outer one (a savepoint),
on SQLite and PostgreSQL, so several service calls can land together or not at all."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from tallykey.accounts.models import Account
from tallykey.db.engine import Database
from tallykey.errors import Conflict

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def slugs(database: Database) -> set[str]:
    with database.reading() as session:
        return set(session.scalars(select(Account.slug)))


def add(database: Database, slug: str) -> None:
    with database.transaction() as session:
        session.add(Account(slug=slug, name=slug, region="eu1", created_at=NOW))


def test_nested_units_land_with_the_outer_one(database_url: str) -> None:
    database = Database(database_url)
    with database.transaction() as outer:
        add(database, "first")
        add(database, "second")
        with database.reading() as read:  # reads inside the unit see its writes
            assert read is outer
            assert {"first", "second"} <= set(read.scalars(select(Account.slug)))
        assert slugs(database) >= {"first", "second"}  # the unit's own view
    assert {"first", "second"} <= slugs(database)


def test_an_error_in_the_outer_unit_undoes_every_nested_one(database_url: str) -> None:
    database = Database(database_url)
    with pytest.raises(RuntimeError), database.transaction():
        add(database, "kept-nowhere")
        raise RuntimeError("the outer work failed")
    assert "kept-nowhere" not in slugs(database)


def test_a_caught_error_in_a_nested_unit_undoes_only_its_own_part(database_url: str) -> None:
    database = Database(database_url)
    with database.transaction():
        add(database, "outer-part")
        with pytest.raises(Conflict), database.transaction() as session:
            session.add(Account(slug="inner-part", name="x", region="eu1", created_at=NOW))
            session.flush()
            raise Conflict("refused after writing")
    assert "outer-part" in slugs(database)
    assert "inner-part" not in slugs(database)
