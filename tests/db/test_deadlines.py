"""Client-side deadlines on every PostgreSQL wait (issue 25): a partition that holds
bytes (a real TCP proxy in front of the test server) is answered by a deadline on this
side, since `statement_timeout` acts only in the server and TCP keepalives are answered
by the proxy's kernel. Once a statement missed its deadline the breaker is open: new
units of work fail at once, and waits already in flight give up after 1 s."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tallykey.db.engine import UNRESPONSIVE_DEADLINE, Database
from tallykey.errors import StoreUnavailable

from ..faultproxy import fault_proxy

pytestmark = [pytest.mark.postgres, pytest.mark.serial]


def _through(url: str, port: int) -> str:
    return make_url(url).set(host="127.0.0.1", port=port).render_as_string(
        hide_password=False)


def test_a_black_hole_is_bounded_on_the_client_and_opens_the_breaker(
        postgres_url: str) -> None:
    target = make_url(postgres_url).port or 5432
    with fault_proxy(target) as proxy:
        database = Database(_through(postgres_url, proxy.port), statement_timeout=1.0)
        try:
            with database.reading() as session:
                assert session.execute(text("SELECT 1")).scalar_one() == 1
            raw = database.raw_connection(autocommit=True, deadline=0.5)
            proxy.black_hole()
            started = time.monotonic()
            with (pytest.raises(StoreUnavailable, match="did not answer in time"),
                  database.reading() as session):  # a pooled connection: 1 s + 1 s margin
                session.execute(text("SELECT 1"))
            pooled = time.monotonic() - started
            assert 1.5 <= pooled < 2.5, pooled
            assert database.breaker.is_open()
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="not answering"), \
                    database.transaction():
                pass
            assert time.monotonic() - started < 0.1, "an open breaker answers at once"
            started = time.monotonic()
            with pytest.raises(Exception, match="client-side deadline"):
                raw.execute("SELECT 1")
            assert time.monotonic() - started < UNRESPONSIVE_DEADLINE + 0.3
            raw.close()
        finally:
            proxy.heal()
            database.breaker.close()
            database.dispose()


def test_waits_in_flight_give_up_once_the_breaker_opens(postgres_url: str) -> None:
    """A statement with a long deadline, waiting when another wait trips the breaker,
    gives up within `UNRESPONSIVE_DEADLINE` instead of its own deadline."""
    target = make_url(postgres_url).port or 5432
    with fault_proxy(target) as proxy:
        database = Database(_through(postgres_url, proxy.port), statement_timeout=30.0)
        try:
            long_wait = database.raw_connection(autocommit=True)  # 31 s deadline
            short_wait = database.raw_connection(autocommit=True, deadline=0.3)
            proxy.black_hole()
            outcome: list[float] = []

            def wait_long() -> None:
                started = time.monotonic()
                try:
                    long_wait.execute("SELECT 1")
                except Exception:
                    outcome.append(time.monotonic() - started)

            thread = threading.Thread(target=wait_long)
            thread.start()
            with pytest.raises(Exception, match="client-side deadline"):
                short_wait.execute("SELECT 1")  # trips the breaker after 0.3 s
            thread.join(timeout=5)
            assert outcome and outcome[0] < UNRESPONSIVE_DEADLINE + 0.5, outcome
        finally:
            proxy.heal()
            database.breaker.close()
            database.dispose()
