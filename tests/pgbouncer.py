"""A PgBouncer of a test's own, in transaction mode, in front of a PostgreSQL server
(Debian's `pgbouncer`, which `.ci/run` installs): run in the foreground from a temporary
directory with its own ini on a free port, `auth_type = trust`. Without the binary a
test is skipped, except in CI, where it fails (`require_pgbouncer`)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

BINARY_PATHS = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


def pgbouncer_binary() -> str | None:
    found = shutil.which("pgbouncer")
    return found or next((path for path in BINARY_PATHS if os.path.exists(path)), None)


def require_pgbouncer() -> str:
    """The binary, or skip (fail in CI) the calling test."""
    import pytest

    from tests.conftest import IN_CI

    binary = pgbouncer_binary()
    if binary is None:
        if IN_CI:
            pytest.fail("pgbouncer is required in CI (apt-get install pgbouncer)")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    return binary


def pools(through: str) -> list[dict[str, object]]:
    """PgBouncer's `SHOW POOLS` (its admin console, database `pgbouncer`), one dict per
    (database, user) pool: `cl_active`/`cl_waiting` (client connections, those waiting
    for a server connection), `sv_active`/`sv_idle`/`sv_used` (server connections),
    `maxwait` (seconds the oldest waiting client has waited)."""
    url = make_url(through)
    libpq = (f"host={url.host} port={url.port} user={url.username or 'postgres'} "
             "dbname=pgbouncer connect_timeout=2")
    # the admin console speaks the simple query protocol only
    with psycopg.connect(libpq, autocommit=True, prepare_threshold=None) as console:
        cursor = console.cursor()
        cursor.execute("SHOW POOLS")
        names = [column.name for column in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def pgbouncer(database_url: str, pool_size: int = 20,
              ignore_options: bool = False) -> Iterator[str]:
    """Run PgBouncer (pool_mode = transaction) in front of the server of `database_url`;
    yields the same URL pointing at PgBouncer. Stopped (SIGTERM, then SIGKILL) after.
    `ignore_options`: `ignore_startup_parameters = options` (else PgBouncer refuses a
    client that sends the `options` startup parameter)."""
    binary = pgbouncer_binary()
    if binary is None:
        raise RuntimeError("pgbouncer is not installed (apt-get install pgbouncer)")
    url = make_url(database_url)
    port = _free_port()
    user = url.username or "postgres"
    with tempfile.TemporaryDirectory(prefix="tallykey-pgbouncer-") as directory:
        home = Path(directory)
        (home / "users.txt").write_text(f'"{user}" ""\n')
        (home / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={url.host or '127.0.0.1'} port={url.port or 5432}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {home / 'users.txt'}\n"
            "pool_mode = transaction\nmax_client_conn = 2000\n"
            f"default_pool_size = {pool_size}\nlogfile =\npidfile =\n"
            f"admin_users = {user}\n"
            + ("ignore_startup_parameters = options\n" if ignore_options else ""))
        os.chmod(home, 0o755)  # noqa: S103 -- readable by the user it switches to when run as root
        for name in ("users.txt", "pgbouncer.ini"):
            os.chmod(home / name, 0o644)
        command = [binary, str(home / "pgbouncer.ini")]
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            command[1:1] = ["-u", "postgres"]
        log = (home / "pgbouncer.log").open("wb")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        through = url.set(host="127.0.0.1", port=port).render_as_string(
            hide_password=False)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    libpq = (f"host=127.0.0.1 port={port} user={user} "
                             f"dbname={url.database} connect_timeout=2")
                    with psycopg.connect(libpq, autocommit=True) as connection:
                        connection.execute("SELECT 1")
                    break
                except psycopg.OperationalError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        written = (home / "pgbouncer.log").read_text(errors="replace")
                        raise RuntimeError(f"pgbouncer did not start: {written[-2000:]}"
                                           ) from None
                    time.sleep(0.05)
            yield through
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            log.close()
