"""A real server process on a free localhost port, seeded with the demo data through the
real CLI (`tallykey demo --seed-only --json`) and served by `tallykey demo --serve-only`
(the demo platform API `/core/v3` exists only there), on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import select

from tallykey.db.engine import Database
from tallykey.errors import TokenFormatError
from tallykey.schema.tables import metadata
from tallykey.settings import normalise_database_url
from tallykey.tokens import format as token_format

from ..conftest import copy_postgres_database, fresh_postgres_database, replace_postgres_database

TALLYKEY = str(Path(sys.executable).with_name("tallykey"))


T = TypeVar("T")


def within_one_minute(burst: Callable[[int], T], tries: int = 3) -> T:
    """What `burst(attempt)` returns from the first attempt that began and ended inside one
    clock minute. The failure throttles count per minute of the wall clock (the servers'
    `time.time() // 60`, this machine's), so a burst that crosses a minute boundary proves
    nothing and is repeated: `attempt` (0, 1, …) picks a client network not used before.
    Instead of waiting for a fresh minute (up to 15 s, whatever the burst's length)."""
    for attempt in range(tries):
        began = time.time()
        result = burst(attempt)
        if int(began // 60) == int(time.time() // 60):
            return result
    raise AssertionError(f"{tries} bursts in a row crossed a minute boundary")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    env: dict[str, str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    seeded: dict[str, Any] = field(default_factory=dict)
    serve_args: tuple[str, ...] = ()
    #: `demo --serve-only` (the seeded demo, with its platform API `/core/v3`) or `serve`.
    command: tuple[str, ...] = ("demo", "--serve-only")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str, check: bool = True, stdin: str | None = None
            ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([TALLYKEY, *args], env=self.env, capture_output=True,
                                text=True, input=stdin, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"tallykey {' '.join(args)} failed: {result.stderr}")
        return result

    def start(self, timeout: float = 60) -> None:
        """Start the server; `timeout`: seconds until `/healthz` must answer (a loaded CI
        machine starts slowly, and slower still when several nodes start at once)."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [TALLYKEY, *self.command, "--port", str(self.port), "--access-log",
             *self.serve_args],
            env=self.env,
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()  # not left running (and loading the machine) after the test failed
        raise AssertionError(f"server did not start: {self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def server_env(tmp: Path, database_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYKEY_")}
    # console passwords hashed cheaply, as in this process (tests/conftest.py): the
    # production profile costs a third of a CPU second per hash and per sign-in
    env["TALLYKEY_ARGON2_PROFILE"] = os.environ.get("TALLYKEY_ARGON2_PROFILE", "CHEAPEST")
    env.update({"TALLYKEY_DATA_DIR": str(tmp / "data"), "TALLYKEY_AUTH_FAIL_LIMIT": "0",
                "TALLYKEY_REGIONS": "eu1=http://eu1.invalid,us1=https://api-us1.example.com"})
    if database_url:
        env["TALLYKEY_DATABASE_URL"] = database_url
    env.update(extra)
    return env


def leaked_tokens(text: str) -> list[str]:
    """Every complete, checksum-valid tallykey token in `text` (prefixes don't count)."""
    found = []
    for match in token_format.TOKEN_PATTERN.finditer(text):
        try:
            token_format.parse(match.group(0))
        except TokenFormatError:
            continue
        found.append(match.group(0)[:20] + "…")
    return found


def assert_no_secrets(server: Server) -> None:
    """After a run: no token secret in the server's log output or anywhere in its store
    (every column of every table: audit, outbox, usage, sessions…)."""
    log_leaks = leaked_tokens(server.log_path.read_text(errors="replace"))
    assert not log_leaks, f"token secrets in the server log: {log_leaks}"
    url = server.env.get("TALLYKEY_DATABASE_URL") or \
        f"sqlite:///{server.env['TALLYKEY_DATA_DIR']}/tallykey.db"
    database = Database(normalise_database_url(url))
    try:
        with database.reading() as session:
            for table in metadata.sorted_tables:
                for row in session.execute(select(table)):
                    text = " ".join(v.decode("latin-1") if isinstance(v, bytes) else str(v)
                                    for v in row)
                    leaks = leaked_tokens(text)
                    assert not leaks, f"token secrets in table {table.name}: {leaks}"
    finally:
        database.dispose()


#: Settings that name where a store is, not what the demo puts in it.
_PLACE = frozenset({"TALLYKEY_DATA_DIR", "TALLYKEY_DATABASE_URL", "TALLYKEY_NODE_NAME"})
#: This process's seeded demos: (backend and settings) -> (data dir, database, its JSON).
_seeded: dict[tuple[str, ...], tuple[Path, str | None, dict[str, Any]]] = {}


def seed_demo(server: Server) -> dict[str, Any]:
    """`tallykey demo --seed-only --json` into `server`'s store (a new data dir and, on
    PostgreSQL, a new migrated database); what it printed.

    The real command runs once per process for each backend and set of settings; the
    next store with the same ones gets a copy of that seeded store (its data dir, and its
    database as a template), which costs a fraction of a CLI run."""
    url = server.env.get("TALLYKEY_DATABASE_URL")
    data_dir = Path(server.env["TALLYKEY_DATA_DIR"])
    key = ("postgresql" if url else "sqlite", *sorted(
        f"{name}={value}" for name, value in server.env.items()
        if name.startswith("TALLYKEY_") and name not in _PLACE))
    if key not in _seeded:
        seeded: dict[str, Any] = json.loads(server.cli("demo", "--seed-only", "--json").stdout)
        template = copy_postgres_database(url, suffix="seeded") if url else None
        cached = data_dir.with_name(data_dir.name + "-seeded")
        shutil.copytree(data_dir, cached)
        _seeded[key] = (cached, template, seeded)
        return seeded
    cached, template, seeded = _seeded[key]
    shutil.copytree(cached, data_dir, dirs_exist_ok=True)
    if url and template:
        replace_postgres_database(url, template)
    copied: dict[str, Any] = json.loads(json.dumps(seeded))  # a test may change it
    return copied


@contextmanager
def running_server(tmp: Path, backend: str, serve_args: tuple[str, ...] = (),
                   **extra: str) -> Iterator[Server]:
    """Seed the demo with the CLI, then serve it; stopped and cleaned up afterwards."""
    with ExitStack() as stack:
        url = stack.enter_context(fresh_postgres_database()) if backend == "postgresql" else None
        env = server_env(tmp, url, **extra)
        server = Server(env=env, port=free_port(), log_path=tmp / "server.log",
                        serve_args=serve_args)
        server.seeded = seed_demo(server)
        server.start()
        stack.callback(assert_no_secrets, server)
        stack.callback(server.stop)
        yield server


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Server]:
    """One real server per test module and backend; trusts 127.0.0.2 as a proxy."""
    tmp = tmp_path_factory.mktemp(f"server-{request.param}")
    with running_server(tmp, request.param, TALLYKEY_TRUSTED_PROXIES="127.0.0.2/32") as live:
        yield live


@contextmanager
def running_cluster(tmp: Path, nodes: int, **extra: str) -> Iterator[list[Server]]:
    """`nodes` servers on one fresh PostgreSQL database, seeded once with the demo."""
    with ExitStack() as stack:
        url = stack.enter_context(fresh_postgres_database())
        servers = []
        for number in range(nodes):
            env = server_env(tmp, url, TALLYKEY_NODE_NAME=f"node{number + 1}", **extra)
            servers.append(Server(env=env, port=free_port(),
                                  log_path=tmp / f"node{number + 1}.log"))
        seeded = seed_demo(servers[0])
        for server in servers:
            server.seeded = seeded
            server.start()
            stack.callback(assert_no_secrets, server)
            stack.callback(server.stop)
        yield servers


def manage(server: Server, method: str, path: str, token: str | None = None,
           **kwargs: Any) -> httpx.Response:
    """A management API call as the demo admin (or with `token`)."""
    headers = {"Authorization": f"Bearer {token or server.seeded['admin']['token']}"}
    return httpx.request(method, server.base_url + path, headers=headers, timeout=10,
                         **kwargs)


def new_token(server: Server, **body: Any) -> dict[str, Any]:
    """A token made by the demo admin through the API (30 days unless `body` says)."""
    body.setdefault("name", "e2e token")
    body.setdefault("expires_in_days", 30)
    response = manage(server, "POST", "/api/v1/tokens", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())
