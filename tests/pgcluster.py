"""A PostgreSQL cluster of a test's own (`initdb` on a free port in a temporary
directory), so fault tests can stop, start and freeze the database under load without
touching the shared server. The binaries come with Debian's `postgresql` package, which
`.ci/run` installs; without them the test is skipped, except in CI, where it fails."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg
import pytest

from tallykey.db import migrate
from tallykey.db.engine import Database

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """One throwaway cluster. `stop()`/`start()` are real outages; `freeze()`/`thaw()`
    pause the server processes (SIGSTOP/SIGCONT)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = _free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/tallykey"
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
            shutil.chown(root, "postgres", "postgres")

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_postgres, *args], check=True, capture_output=True,
                       timeout=120)

    def init(self) -> None:
        initdb = _binary("initdb")
        assert initdb is not None
        self._run(initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                       "max_connections = 200\n")
        self.start()
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as admin:
            admin.execute("CREATE DATABASE tallykey")
        database = Database(self.url)
        migrate.upgrade(database)
        database.dispose()

    def start(self) -> None:
        pg_ctl = _binary("pg_ctl")
        assert pg_ctl is not None
        self._run(pg_ctl, "-D", str(self.data), "-l", str(self.root / "server.log"),
                  "-w", "-t", "60", "start")

    def stop(self, mode: str = "immediate") -> None:
        pg_ctl = _binary("pg_ctl")
        assert pg_ctl is not None
        self._run(pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def _pids(self) -> list[int]:
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True,
                                  text=True).stdout.split()
        return [postmaster, *map(int, children)]

    def freeze(self) -> None:
        for pid in self._pids():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._pids():
            os.kill(pid, signal.SIGCONT)

    def reachable(self) -> bool:
        try:
            with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres "
                                 "dbname=tallykey connect_timeout=2"):
                return True
        except psycopg.OperationalError:
            return False


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A started, migrated cluster; stopped and removed afterwards."""
    if _binary("initdb") is None or _binary("pg_ctl") is None:
        if IN_CI:
            pytest.fail("initdb/pg_ctl are required in CI (Debian's postgresql package)")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    root = Path(tempfile.mkdtemp(prefix="tallykey-pg-"))
    cluster = PostgresCluster(root)
    try:
        cluster.init()
        yield cluster
    finally:
        with suppress(OSError, ValueError, IndexError):
            cluster.thaw()
        with suppress(subprocess.CalledProcessError):
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def wait_until(condition: object, timeout: float, step: float = 0.02) -> float:
    """Poll `condition()` until it is true; returns the seconds it took. Fails the test
    with a clear message on timeout (never a fixed sleep)."""
    assert callable(condition)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s: {condition}")
