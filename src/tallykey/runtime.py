"""Wires settings, storage, the clock and the services together: one place, used by the
server, the CLI, the worker and the embedded verifier alike."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from tallykey.accounts.models import Account
from tallykey.accounts.service import AccountService
from tallykey.auth.sessions import SessionStore
from tallykey.clock import Clock, SystemClock
from tallykey.db import migrate
from tallykey.db.engine import Database
from tallykey.errors import TallykeyError
from tallykey.keys.keyring import KeyConfigError, load_keyring
from tallykey.keys.models import AccountKey
from tallykey.keys.vault import SecretVault
from tallykey.notify.notices import Notifier
from tallykey.notify.webhooks import WebhookService
from tallykey.people.resets import PasswordResets
from tallykey.people.sso import SingleSignOn
from tallykey.people.twofactor import TwoFactor
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
    sessions: SessionStore
    notifier: Notifier
    webhooks: WebhookService
    resets: PasswordResets
    two_factor: TwoFactor
    sso: SingleSignOn
    vault: SecretVault | None = None

    @classmethod
    def build(cls, settings: Settings | None = None, clock: Clock | None = None) -> Runtime:
        settings = settings or load_settings()
        clock = clock or SystemClock()
        database = Database(settings.resolved_database_url)
        keyring = load_keyring(settings.kek, settings.kek_file)
        vault = SecretVault(database, clock, keyring) if keyring else None
        notifier = Notifier(public_url=settings.public_url)
        return cls(
            settings=settings,
            database=database,
            clock=clock,
            accounts=AccountService(database, clock, keys_configured=vault is not None),
            tokens=TokenService(database, clock, region=settings.region,
                                targets=settings.target_list,
                                listeners=[notifier.on_token_event], vault=vault),
            sessions=SessionStore(database, clock),
            notifier=notifier,
            webhooks=WebhookService(database, clock),
            resets=PasswordResets(database, clock, settings.public_url),
            two_factor=TwoFactor(database, clock),
            sso=SingleSignOn(database, clock, settings),
            vault=vault,
        )

    def check_keys(self) -> None:
        """Refuse to start with a missing or wrong key-encryption key, rather than failing
        per request later. Verification itself never needs the key."""
        if self.vault is not None:
            self.vault.check()
            return
        with self.database.reading() as session:
            needing = session.scalar(select(func.count()).select_from(Account).where(
                Account.retrievable_application_tokens.is_(True)))
            wrapped = session.scalar(select(func.count()).select_from(AccountKey))
        if needing or wrapped:
            raise KeyConfigError(
                f"{needing} account(s) keep application tokens retrievable, but no "
                "key-encryption key is configured.",
                "Set TALLYKEY_KEK or TALLYKEY_KEK_FILE to the key in use.")

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
