"""Wires settings, storage, the clock and the services together: one place, used by the
server, the CLI, the worker and the embedded verifier alike."""

from __future__ import annotations

from dataclasses import dataclass

from tallykey.accounts.service import AccountService
from tallykey.clock import Clock, SystemClock
from tallykey.db import migrate
from tallykey.db.engine import Database
from tallykey.errors import TallykeyError
from tallykey.notify.notices import Notifier
from tallykey.notify.webhooks import WebhookService
from tallykey.settings import Settings, load_settings
from tallykey.tokens.service import TokenService


class SchemaOutdated(TallykeyError):
    status = 503
    code = "schema_outdated"


@dataclass
class Runtime:
    settings: Settings
    database: Database
    clock: Clock
    accounts: AccountService
    tokens: TokenService
    notifier: Notifier
    webhooks: WebhookService

    @classmethod
    def build(cls, settings: Settings | None = None, clock: Clock | None = None) -> Runtime:
        settings = settings or load_settings()
        clock = clock or SystemClock()
        database = Database(settings.resolved_database_url)
        notifier = Notifier(public_url=settings.public_url)
        return cls(
            settings=settings,
            database=database,
            clock=clock,
            accounts=AccountService(database, clock),
            tokens=TokenService(database, clock, region=settings.region,
                                targets=settings.target_list,
                                listeners=[notifier.on_token_event]),
            notifier=notifier,
            webhooks=WebhookService(database, clock),
        )

    def ensure_schema(self) -> None:
        """Migrate the embedded SQLite store on demand; a shared PostgreSQL is migrated
        explicitly (`tallykey migrate`), so nodes never race each other's migrations."""
        if migrate.current_revision(self.database) == migrate.head_revision(self.database.url):
            return
        if self.database.dialect == "sqlite":
            migrate.upgrade(self.database)
            return
        raise SchemaOutdated("The database schema is not up to date.",
                             "Run 'tallykey migrate' once, then start again.")

    def close(self) -> None:
        self.database.dispose()
