"""Schema migrations with Alembic, run from code so `tallykey migrate` needs no ini file."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from tallykey.db.engine import Database
from tallykey.errors import UnknownRevision

MIGRATIONS_DIR = Path(__file__).parents[1] / "schema" / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(database: Database) -> tuple[str | None, str]:
    """Bring the schema to the newest revision; idempotent. Returns (before, after)."""
    before = current_revision(database)
    config = alembic_config(database.url)
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return before, head_revision(database.url)


def current_revision(database: Database) -> str | None:
    with database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision(url: str) -> str:
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert head is not None
    return head


def known_revision(url: str, revision: str) -> bool:
    """Whether this code's migrations contain `revision` (a newer release's do not)."""
    return any(script.revision == revision
               for script in ScriptDirectory.from_config(alembic_config(url)).walk_revisions())


def pending_revisions(database: Database) -> list[str]:
    """The revisions `upgrade` would apply, oldest first, as `revision: message`.
    `UnknownRevision` when the store is at a revision this code does not know."""
    current = current_revision(database)
    script = ScriptDirectory.from_config(alembic_config(database.url))
    if current is not None and not known_revision(database.url, current):
        raise UnknownRevision(current, head_revision(database.url))
    pending = list(script.iterate_revisions("head", current or "base"))
    return [f"{step.revision}: {step.doc}" for step in reversed(pending)
            if step.revision != current]


