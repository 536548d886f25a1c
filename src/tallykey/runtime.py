"""Wires settings, storage, the clock and the services together: one place, used by the
server, the CLI, the worker and the embedded verifier alike."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select

from tallykey.accounts import passwords
from tallykey.accounts.models import Account
from tallykey.accounts.scopes import ScopeCatalog, load_catalog
from tallykey.accounts.service import AccountService
from tallykey.auth.operations import OperationTable
from tallykey.auth.verifier import Verifier
from tallykey.auth.wiring import Surroundings
from tallykey.clock import Clock
from tallykey.db import migrate
from tallykey.db.engine import Database
from tallykey.demo_files import kek_path as demo_kek_path
from tallykey.errors import KeyConfigError, SchemaOutdated
from tallykey.feed.clock import DatabaseClock
from tallykey.feed.nodes import NodePresence
from tallykey.feed.propagation import Propagator
from tallykey.identities.service import IdentityService
from tallykey.keys.keyring import load_keyring, missing_kek_hint
from tallykey.keys.models import AccountKey
from tallykey.keys.vault import SEALED_PREFIX, SecretVault, sealed_key_id
from tallykey.monitor.metrics import PROPAGATION_INCOMPLETE
from tallykey.notify.models import WebhookEndpoint
from tallykey.notify.notices import Notifier
from tallykey.notify.webhooks import WebhookService
from tallykey.operators.service import OperatorService
from tallykey.people.resets import PasswordResets
from tallykey.people.sessions import SessionStore
from tallykey.people.sso import SingleSignOn
from tallykey.people.twofactor import TwoFactor
from tallykey.plans.service import PlanService
from tallykey.settings import Settings, load_settings
from tallykey.tokens.service import TokenService


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
    #: The database's clock: heartbeats, liveness and propagation follow it.
    database_clock: DatabaseClock
    #: Waits for a verdict-affecting change to reach every live node (`settle`).
    propagation: Propagator
    resets: PasswordResets
    two_factor: TwoFactor
    sso: SingleSignOn
    vault: SecretVault | None = None
    catalog: ScopeCatalog = field(default_factory=lambda: load_catalog(None))
    #: The platform's OpenAPI operations (`TALLYKEY_OPENAPI_FILE`), or None.
    operations: OperationTable | None = None
    operators: OperatorService = field(init=False)
    identities: IdentityService = field(init=False)
    plans: PlanService = field(init=False)

    def __post_init__(self) -> None:
        self.identities = IdentityService(self.database, self.clock, self.propagation)
        self.plans = PlanService(self.database, self.clock, self.catalog, self.propagation)
        self.operators = OperatorService(self.database, self.clock, self.accounts,
                                         self.settings.region)

    @classmethod
    def build(cls, settings: Settings | None = None, clock: Clock | None = None) -> Runtime:
        settings = settings or load_settings()
        passwords.use_profile(settings.argon2_profile)
        catalog = load_catalog(settings.scopes_file)  # a bad file stops here, one line
        operations = (OperationTable.load(settings.openapi_file, catalog,
                                          settings.openapi_unlisted)
                      if settings.openapi_file else None)  # so does a bad document
        database = Database(settings.resolved_database_url, settings.db_connect_timeout,
                            settings.db_statement_timeout, settings.db_pooler)
        database_clock = DatabaseClock(database)
        clock = clock or database_clock
        propagation = Propagator(database, database_clock, settings.propagation_timeout,
                                 settings.stale_if_error, PROPAGATION_INCOMPLETE.inc)
        keyring = load_keyring(settings.kek, settings.kek_file)
        vault = SecretVault(database, clock, keyring) if keyring else None
        notifier = Notifier(public_url=settings.public_url)
        return cls(
            settings=settings,
            database=database,
            clock=clock,
            accounts=AccountService(database, clock, keys_configured=vault is not None,
                                    catalog=catalog, propagation=propagation),
            tokens=TokenService(database, clock, region=settings.region,
                                targets=settings.target_list,
                                listeners=[notifier.on_token_event], vault=vault,
                                catalog=catalog,
                                kek_hint=missing_kek_hint(settings.data_dir)),
            sessions=SessionStore(database, clock),
            notifier=notifier,
            webhooks=WebhookService(database, clock,
                                    allow_private=settings.webhook_private_targets,
                                    keyring=keyring),
            database_clock=database_clock,
            propagation=propagation,
            resets=PasswordResets(database, clock, settings.public_url),
            two_factor=TwoFactor(database, clock),
            sso=SingleSignOn(database, clock, settings),
            vault=vault,
            catalog=catalog,
            operations=operations,
        )

    def build_verifier(self, *, background: bool = True) -> Verifier:
        """This process's verifier, on the runtime's settings, database, clocks and its
        one notifier (which also writes the usage alerts' notices)."""
        return Verifier.on(Surroundings(settings=self.settings, database=self.database,
                                        database_clock=self.database_clock,
                                        clock=self.clock, notifier=self.notifier),
                           background=background)

    def check_keys(self) -> None:
        """Refuse to start with a missing or wrong key-encryption key, rather than failing
        per request later. Verification itself never needs the key."""
        with self.database.reading() as session:
            sealed = {sealed_key_id(stored) for stored in session.scalars(
                select(WebhookEndpoint.secret).where(
                    WebhookEndpoint.secret.startswith(SEALED_PREFIX)))}
        if self.vault is not None:
            self.vault.check()
            missing = sorted(str(k) for k in sealed - set(self.vault.keyring.keys))
            if missing:
                raise KeyConfigError(
                    f"Webhook signing secrets are sealed under key-encryption key "
                    f"{missing[0]!r}, which is not in TALLYKEY_KEK.",
                    "Add it back (after the current key) until 'tallykey keys rotate' has "
                    "re-sealed everything.")
            return
        with self.database.reading() as session:
            needing = session.scalar(select(func.count()).select_from(Account).where(
                Account.retrievable_application_tokens.is_(True)))
            wrapped = session.scalar(select(func.count()).select_from(AccountKey))
        if sealed and not needing and not wrapped:
            raise KeyConfigError(
                "Webhook signing secrets are sealed under a key-encryption key, but none "
                "is configured.", "Set TALLYKEY_KEK or TALLYKEY_KEK_FILE to the key in use.")
        if needing or wrapped:
            demo_key = demo_kek_path(self.settings.data_dir)
            raise KeyConfigError(
                f"{needing} account(s) keep application tokens retrievable, but no "
                "key-encryption key is configured.",
                "Set TALLYKEY_KEK or TALLYKEY_KEK_FILE to the key in use"
                + (f" (the demo's is TALLYKEY_KEK_FILE={demo_key.resolve()})."
                   if demo_key.exists() else "."))

    def check_writable(self) -> None:
        """Refuse to start on a store that cannot take writes (full disk, read-only data
        directory): write and remove a node row, as every heartbeat will."""
        probe = NodePresence(self.database, self.database_clock, "startup check", lease=0)
        probe.report(0, None, None)
        probe.leave()

    def ensure_schema(self) -> None:
        """Migrate the embedded SQLite store on demand; a shared PostgreSQL is migrated
        explicitly (`tallykey migrate`), so nodes never race each other's migrations."""
        current = migrate.current_revision(self.database)
        head = migrate.head_revision(self.database.url)
        if current == head:
            return
        if current is not None and not migrate.known_revision(self.database.url, current):
            raise SchemaOutdated(
                f"The database schema is at revision {current}, which this tallykey "
                f"(schema {head}) does not know: a newer release migrated it.",
                "Run the release that migrated it (or newer); never migrate backwards.")
        if self.database.dialect == "sqlite":
            migrate.upgrade(self.database)
            return
        raise SchemaOutdated(f"The database schema is behind this tallykey (at "
                             f"{current or 'empty'}, needs {head}).",
                             "Run 'tallykey migrate' once, then start again.")

    def close(self) -> None:
        self.database.dispose()
