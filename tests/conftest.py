"""Shared fixtures: a fresh store per test on SQLite and on a real PostgreSQL server.

PostgreSQL comes from `TALLYKEY_TEST_DATABASE_URL` (default: the local server). Each test
run creates its own database and drops it at the end. Without a server the PostgreSQL
variants are skipped, except in CI (`CI=true`), where they fail instead.
"""

from __future__ import annotations

import atexit
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tallykey.accounts import passwords
from tallykey.clock import FrozenClock
from tallykey.db import migrate
from tallykey.db.engine import Database
from tallykey.runtime import Runtime
from tallykey.schema.tables import metadata
from tallykey.settings import Settings, normalise_database_url

from .redisserver import RedisServer, running_redis

if TYPE_CHECKING:
    from tallykey.actor import Actor

#: Tests that stop databases or Redis, kill servers, or hold a timing bound: they run on a
#: machine of their own, after the rest (`make test` runs `-m "not serial"` in parallel,
#: then `-m serial`).
SERIAL_FILES = frozenset({
    "e2e/test_faults.py", "e2e/test_crash_safety.py", "e2e/test_scale_out.py",
    "e2e/test_scale_out_outbox.py", "e2e/test_serve.py", "e2e/test_monitoring.py",
    "e2e/test_workspace_cluster.py", "e2e/test_key_limits_cluster.py",
    "auth/test_verifier_faults.py", "auth/test_rates.py", "auth/test_credits.py",
    # a sign-in back-off waited out, a cached verdict's lifetime: seconds matter
    "e2e/test_security_review_timing.py", "e2e/test_nginx.py",
    # the benchmark smoke run starts servers and drives wrk
    "test_bench.py",
})


#: The longest files of the parallel phase, mostly waiting on something other than this
#: process (pip installing the previous release; npm and node with servers of their own):
#: first, so that `--dist loadfile` starts them at once instead of last, alone on a worker.
FIRST_FILES = ("test_upgrade.py", "clients/test_typescript.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        if item.path.relative_to(tests).as_posix() in SERIAL_FILES:
            item.add_marker(pytest.mark.serial)

    def rank(item: pytest.Item) -> int:
        name = item.path.relative_to(tests).as_posix()
        return FIRST_FILES.index(name) if name in FIRST_FILES else len(FIRST_FILES)

    items.sort(key=rank)  # stable: every other test keeps its order


DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# Console passwords hashed with argon2-cffi's cheapest parameters, in this process and in
# every server a test starts (they inherit the environment); production's are tested in
# tests/accounts/test_passwords.py.
os.environ.setdefault("TALLYKEY_ARGON2_PROFILE", "CHEAPEST")
passwords.use_profile(os.environ["TALLYKEY_ARGON2_PROFILE"])


def pg_server_url() -> str:
    return normalise_database_url(os.environ.get("TALLYKEY_TEST_DATABASE_URL", DEFAULT_PG))


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


#: This process's migrated template database on the PostgreSQL server (made at its first
#: use, dropped when the process ends): a new database is a copy of it, about 0.1 s,
#: instead of running every migration again (2 s or more on a loaded machine).
_pg_template: list[str] = []


def _migrated_template(admin: psycopg.Connection[Any], server: str) -> str:
    if not _pg_template:
        name = f"tallykey_template_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        admin.execute(f'CREATE DATABASE "{name}"')
        atexit.register(_drop_database, server, name)
        database = Database(make_url(server).set(database=name)
                            .render_as_string(hide_password=False))
        migrate.upgrade(database)
        database.dispose()  # a template copies only while nobody is connected to it
        _pg_template.append(name)
    return _pg_template[0]


def _drop_database(server: str, name: str) -> None:
    with suppress(psycopg.Error), psycopg.connect(_libpq(server), autocommit=True,
                                                  connect_timeout=3) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, migrated database on the PostgreSQL server, dropped afterwards."""
    server = pg_server_url()
    try:
        admin = psycopg.connect(_libpq(server), autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI and unreachable: {error}")
        pytest.skip(f"no PostgreSQL server at {make_url(server).host}: {error}")
    name = f"tallykey_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_migrated_template(admin, server)}"')
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def copy_postgres_database(url: str, suffix: str) -> str:
    """A copy of the database at `url` (nobody may be connected to it), kept until this
    process ends: its name, for `replace_postgres_database`."""
    server = pg_server_url()
    name = f"tallykey_{suffix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_libpq(server), autocommit=True, connect_timeout=3) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{make_url(url).database}"')
    atexit.register(_drop_database, server, name)
    return name


def replace_postgres_database(url: str, template: str) -> None:
    """The database at `url` (nobody connected) dropped and made again as a copy of
    `template`."""
    name = make_url(url).database
    with psycopg.connect(_libpq(pg_server_url()), autocommit=True,
                         connect_timeout=3) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's chromium through Playwright, one per test run (browser tests and the
    end-to-end platform walk-through share it). Skips without it, except in CI."""
    def unavailable(reason: str) -> None:
        if IN_CI:
            pytest.fail(f"browser tests must run in CI: {reason}")
        pytest.skip(reason)

    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of its own for this test run on the PostgreSQL server."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file, copied for each test (migrating each time is slow)."""
    path = tmp_path_factory.mktemp("template") / "tallykey.db"
    database = Database(f"sqlite:///{path}")
    migrate.upgrade(database)
    database.dispose()
    return path


def _truncate_all(url: str) -> None:
    database = Database(url)
    with database.engine.begin() as connection:
        names = ", ".join(f'"{t.name}"' for t in reversed(metadata.sorted_tables))
        connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        # a test may have moved the shared database's revision (schema checks): back to head
        connection.execute(text("UPDATE alembic_version SET version_num = :head"),
                           {"head": migrate.head_revision(url)})
    database.dispose()


def revision_before_head() -> str:
    """The revision just before head: a store one migration behind this code."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    head = script.get_revision(migrate.head_revision("sqlite://"))
    assert head is not None and isinstance(head.down_revision, str)
    return head.down_revision


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, migrated store: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        target = tmp_path / "data" / "tallykey.db"
        target.parent.mkdir()
        shutil.copy(request.getfixturevalue("sqlite_template"), target)
        yield f"sqlite:///{target}"
        return
    url = request.getfixturevalue("postgres_url")
    _truncate_all(url)
    yield url


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A Redis server of this test's own, on a free port (`tests/redisserver.py`)."""
    yield from running_redis()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, data_dir=tmp_path / "data", region="eu1")


@pytest.fixture
def rt(settings: Settings, clock: FrozenClock) -> Iterator[Runtime]:
    runtime = Runtime.build(settings, clock)
    yield runtime
    runtime.close()


class World:
    """Two tenants: acme (two workspaces, an admin and a member who sees one workspace)
    and globex (an admin), for isolation checks."""

    def __init__(self, rt: Runtime) -> None:
        from tallykey.actor import Actor

        self.rt = rt
        acme = rt.accounts.create_account("acme", "Acme", "eu1")
        self.acme_id = acme.id
        operator = Actor.operator(acme.id)
        self.sales = rt.accounts.create_workspace(acme.id, "sales", "Sales")
        self.ops = rt.accounts.create_workspace(acme.id, "ops", "Operations")
        self.admin = rt.accounts.create_user(operator, "admin@acme.test", role="admin",
                                             password="correct horse battery")
        self.member = rt.accounts.create_user(
            operator, "member@acme.test", role="member", password="member password 1",
            grants={self.sales.id: ["employees:read"]})
        globex = rt.accounts.create_account("globex", "Globex", "eu1")
        self.globex_id = globex.id
        self.other_admin = rt.accounts.create_user(Actor.operator(globex.id),
                                                   "admin@globex.test", role="admin")

    def actor(self, user_email: str, ip: str | None = "198.51.100.7") -> Actor:
        from tallykey.actor import Actor

        for user in (self.admin, self.member, self.other_admin):
            if user.email == user_email:
                current = self.rt.accounts.get_user(Actor.operator(user.account_id), user.id)
                return Actor(current.account_id, current.id, current.role, current.email, ip)
        raise KeyError(user_email)

    @property
    def as_admin(self) -> Actor:
        return self.actor("admin@acme.test")

    @property
    def as_member(self) -> Actor:
        return self.actor("member@acme.test")

    @property
    def as_other_admin(self) -> Actor:
        return self.actor("admin@globex.test")


@pytest.fixture
def world(rt: Runtime) -> World:
    return World(rt)
