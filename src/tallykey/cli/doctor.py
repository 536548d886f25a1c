"""`tallykey doctor [--json]`: one line per check of a deployment (SPEC §14), secrets
masked, each check bounded in time; exit 0 only when none fails.

Checks: settings, store reachable, schema at head, clock offset to the database, Redis,
SMTP (connect and EHLO), OpenID issuer discovery (each when configured), the key-encryption
key where accounts keep secrets retrievable, and the public URL.
"""

from __future__ import annotations

import json
import smtplib
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from tallykey.cli.output import EXIT_CONFIG, out
from tallykey.db import migrate as migrations
from tallykey.db.engine import Database, store_outage
from tallykey.errors import SettingsError, TallykeyError, UnknownRevision
from tallykey.settings import Settings, load_settings, mask_url

#: No check takes longer than this (connect timeouts are set below it).
CHECK_SECONDS = 3.0
#: A node whose clock is further than this from the database's is reported.
CLOCK_OFFSET_LIMIT = 1.0

OK, FAIL, SKIP, WARN = "ok", "fail", "skip", "warn"


@dataclass
class Check:
    name: str
    status: str
    detail: str


class Doctor:
    """Runs the checks in order; a check whose prerequisite failed is skipped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database: Database | None = None
        self.store_ok = False
        self.schema_ok = False

    def close(self) -> None:
        if self.database is not None:
            self.database.dispose()

    # --- the checks: each returns (status, detail) -------------------------------------

    def store(self) -> tuple[str, str]:
        url = self.settings.resolved_database_url
        shown = mask_url(self.settings.database_url or url)
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database and \
                not Path(parsed.database).exists():
            return FAIL, (f"no SQLite store at {parsed.database} yet (TALLYKEY_DATA_DIR); "
                          "run 'tallykey migrate' or start 'tallykey serve' once")
        self.database = Database(url, connect_timeout=2, statement_timeout=CHECK_SECONDS - 0.5)
        with self.database.reading() as session:
            session.connection().exec_driver_sql("SELECT 1")
        self.store_ok = True
        return OK, f"{shown} answers"

    def schema(self) -> tuple[str, str]:
        assert self.database is not None
        head = migrations.head_revision(self.database.url)
        try:
            pending = migrations.pending_revisions(self.database)
        except UnknownRevision as unknown:
            return FAIL, (f"at revision {unknown.revision}, unknown to this tallykey (head "
                          f"{head}): a newer release migrated it")
        if pending:
            return FAIL, (f"{len(pending)} revision(s) pending (head {head}); run "
                          "'tallykey migrate'")
        self.schema_ok = True
        return OK, f"at head ({head})"

    def clock(self) -> tuple[str, str]:
        assert self.database is not None
        if self.database.dialect != "postgresql":
            return OK, "offset 0 s (SQLite: the store shares this machine's clock)"
        with self.database.reading() as session:
            before = time.time()
            db_now = float(session.execute(text(
                "SELECT extract(epoch FROM clock_timestamp())")).scalar_one())
            after = time.time()
        offset = db_now - (before + after) / 2
        detail = f"offset {offset:+.3f} s to the database (±{(after - before) / 2:.3f} s)"
        if abs(offset) > CLOCK_OFFSET_LIMIT:
            return FAIL, (detail + f", more than {CLOCK_OFFSET_LIMIT:g} s: synchronise this "
                          "machine's clock (NTP)")
        return OK, detail

    def redis(self) -> tuple[str, str]:
        if not self.settings.redis_url:
            return SKIP, "not configured (rate limits are counted per node)"
        import redis

        client = redis.Redis.from_url(self.settings.redis_url, socket_timeout=2,
                                      socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
        return OK, f"{mask_url(self.settings.redis_url)} answers PING"

    def smtp(self) -> tuple[str, str]:
        if not self.settings.smtp_url:
            return SKIP, "not configured (mails stay in the outbox)"
        from tallykey.notify.smtp import SmtpConfig

        config = SmtpConfig.parse(self.settings.smtp_url)
        kind = smtplib.SMTP_SSL if config.implicit_tls else smtplib.SMTP
        with kind(config.host, config.port, timeout=CHECK_SECONDS - 0.5) as server:
            code, _ = server.ehlo()
            if code != 250:
                return FAIL, f"{config.describe()} answered EHLO with {code}"
            tls = "STARTTLS offered" if server.has_extn("starttls") else "no STARTTLS"
        return OK, f"{config.describe()} answers EHLO ({tls})"

    def openid(self) -> tuple[str, str]:
        issuer = self.settings.oidc_issuer
        if not issuer:
            return SKIP, "not configured"
        import httpx

        if not self.settings.oidc_enabled:
            return FAIL, ("TALLYKEY_OIDC_ISSUER is set but TALLYKEY_OIDC_CLIENT_ID or "
                          "TALLYKEY_OIDC_CLIENT_SECRET is not")
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        answer = httpx.get(url, timeout=CHECK_SECONDS - 0.5)
        if answer.status_code != 200:
            return FAIL, f"{url} answered {answer.status_code}"
        try:
            document = answer.json()
        except ValueError:
            return FAIL, f"{url} is not JSON"
        missing = [key for key in ("issuer", "authorization_endpoint", "token_endpoint",
                                   "jwks_uri") if not document.get(key)]
        if missing:
            return FAIL, f"{url} lacks {', '.join(missing)}"
        if str(document["issuer"]).rstrip("/") != issuer.rstrip("/"):
            return FAIL, f"the provider names its issuer {document['issuer']}, not {issuer}"
        return OK, f"{issuer} discovery document read"

    def kek(self) -> tuple[str, str]:
        assert self.database is not None
        from tallykey.accounts.models import Account
        from tallykey.clock import SystemClock
        from tallykey.keys.keyring import load_keyring
        from tallykey.keys.models import AccountKey
        from tallykey.keys.vault import SecretVault

        keyring = load_keyring(self.settings.kek, self.settings.kek_file)
        with self.database.reading() as session:
            needing = session.scalar(select(func.count()).select_from(Account).where(
                Account.retrievable_application_tokens.is_(True))) or 0
        if keyring is None:
            with self.database.reading() as session:
                wrapped = session.scalar(select(func.count()).select_from(AccountKey)) or 0
            if needing or wrapped:
                return FAIL, (f"{needing} account(s) keep secrets retrievable but no key is "
                              "set (TALLYKEY_KEK or TALLYKEY_KEK_FILE)")
            return OK, "not needed (no account keeps secrets retrievable)"
        opened = SecretVault(self.database, SystemClock(), keyring).check()
        return OK, (f"current key {keyring.current_id}; opens all {opened} data key(s) "
                    f"({needing} account(s) keep secrets retrievable)")

    def public_url(self) -> tuple[str, str]:
        url = self.settings.public_url
        if not url:
            return WARN, ("not set: links in mails and the setup link use the address a "
                          "request came in on; set TALLYKEY_PUBLIC_URL behind a proxy")
        import httpx

        try:
            answer = httpx.get(url.rstrip("/") + "/healthz", timeout=CHECK_SECONDS - 0.5)
        except httpx.HTTPError as error:
            # Often by design: a node behind a proxy may not reach the address browsers use
            # (split DNS, no hairpin NAT, a compose network). Check it from a browser.
            return WARN, (f"{url}/healthz cannot be reached from this node "
                          f"({type(error).__name__}); fine if only browsers reach it")
        if answer.status_code != 200 or "region" not in answer.text:
            return FAIL, f"{url}/healthz answered {answer.status_code}, not a tallykey node"
        note = "" if url.startswith("https://") else " (plain http: use https in production)"
        return (OK if not note else WARN), f"{url} reaches a tallykey node{note}"


def _bounded(check: Callable[[], tuple[str, str]]) -> tuple[str, str]:
    """Run `check` with a hard time bound; its errors become a failed line (never a
    traceback, never a driver message that could hold a password)."""
    result: list[tuple[str, str]] = []

    def run() -> None:
        try:
            result.append(check())
        except TallykeyError as error:
            result.append((FAIL, error.message.rstrip(".")))
        except Exception as error:  # every failure is one line
            outage = store_outage(error)
            reason = outage.message.rstrip(".") if outage else _describe(error)
            result.append((FAIL, reason))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(CHECK_SECONDS + 0.5)
    if not result:
        return FAIL, f"no answer within {CHECK_SECONDS:g} s"
    return result[0]


def _describe(error: BaseException) -> str:
    """A driver error in a few words, without its parameters."""
    if isinstance(error, OSError) and error.strerror:
        return f"cannot connect: {error.strerror}"
    name = type(error).__name__
    message = str(error).splitlines()[0] if str(error) else ""
    if "@" in message or "password" in message.lower():
        message = ""
    return f"{name}: {message[:160]}" if message else name


def run_checks(settings: Settings) -> list[Check]:
    doctor = Doctor(settings)
    checks = [Check("settings", OK, "every TALLYKEY_* variable is known and valid")]
    try:
        checks.append(Check("store", *_bounded(doctor.store)))
        for name, check in (("schema", doctor.schema), ("clock", doctor.clock)):
            checks.append(Check(name, *_bounded(check)) if doctor.store_ok else
                          Check(name, SKIP, "the store cannot be reached"))
        checks.append(Check("kek", *_bounded(doctor.kek)) if doctor.schema_ok else
                      Check("kek", SKIP, "needs a store with its schema at head"))
        for name, check in (("redis", doctor.redis), ("smtp", doctor.smtp),
                            ("openid", doctor.openid), ("public_url", doctor.public_url)):
            checks.append(Check(name, *_bounded(check)))
    finally:
        doctor.close()
    order = ["settings", "store", "schema", "clock", "redis", "smtp", "openid", "kek",
             "public_url"]
    return sorted(checks, key=lambda c: order.index(c.name))


def startup_warnings(settings: Settings) -> list[str]:
    """What `serve` says before it listens when a configured Redis or OpenID issuer
    cannot be used (it starts anyway: both can come back; see `doctor`)."""
    doctor = Doctor(settings)
    warnings = []
    for name, check, effect in (
            ("TALLYKEY_REDIS_URL", doctor.redis, "rate limits follow TALLYKEY_REDIS_FAILURE "
             f"({settings.redis_failure}) until it answers"),
            ("TALLYKEY_OIDC_ISSUER", doctor.openid, "single sign-on fails until it can be "
             "read")):
        status, detail = _bounded(check)
        if status == FAIL:
            warnings.append(f"{name}: {detail}; {effect}.")
    return warnings


def _print(checks: list[Check], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps({"ok": not any(c.status == FAIL for c in checks),
                                     "checks": [asdict(c) for c in checks]}, indent=2) + "\n")
        return
    colours = {OK: "green", FAIL: "red", SKIP: "dim", WARN: "yellow"}
    for c in checks:
        out.print(f"[{colours[c.status]}]{c.status:<4}[/] {c.name:<10} {c.detail}",
                  highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command()
    def doctor(as_json: Annotated[bool, typer.Option("--json", metavar="",
                                                     help="Print JSON.")] = False) -> None:
        """Check this deployment, one line per check (secrets masked): settings, store,
        schema, clock offset, Redis, SMTP, OpenID issuer, key-encryption key, public URL.
        Exit 0 only when no check fails (78: the settings themselves are wrong)."""
        try:
            settings = load_settings()
        except SettingsError as error:
            _print([Check("settings", FAIL, line) for line in str(error).splitlines()],
                   as_json)
            raise typer.Exit(EXIT_CONFIG) from None
        checks = run_checks(settings)
        _print(checks, as_json)
        if any(c.status == FAIL for c in checks):
            raise typer.Exit(1)
