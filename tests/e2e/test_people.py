"""Password reset and password setting against the real server: the server's own worker
mails the link to a real SMTP server, parallel submissions of the link let exactly one
through, asking answers alike (and as fast) for any address, and the CLI sets a password
read from standard input."""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ..notify.conftest import Recorder, SmtpServer
from ..notify.conftest import free_port as free_smtp_port
from .conftest import Server, running_server

# the test server speaks HTTP (an https public URL would make its cookies Secure)
PUBLIC_URL = "http://keys.example.test"
LINK = re.compile(re.escape(PUBLIC_URL) + r"(/console/reset/[A-Za-z0-9_-]+)")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
NEW_PASSWORD = "violet harbour engine"


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer("127.0.0.1", free_smtp_port(), Recorder())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
         smtp: SmtpServer) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(f"people-{request.param}")
    with running_server(tmp, request.param, TALLYKEY_SMTP_URL=smtp.url,
                        TALLYKEY_PUBLIC_URL=PUBLIC_URL, TALLYKEY_WORKER_INTERVAL="0.2") as server:
        yield server


def wait_for_link(smtp: SmtpServer, address: str, seen: int) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        mails = smtp.to(address)
        if len(mails) > seen:
            body = mails[-1].message.get_body(("plain",))
            assert body is not None
            found = LINK.search(body.get_content())
            assert found, body.get_content()
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no reset mail for {address}")


def sign_in(server: Server, email: str, password: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}/api/v1/session",
                      json={"email": email, "password": password}, timeout=10)


def test_a_mailed_link_used_in_parallel_sets_the_password_once(live: Server,
                                                             smtp: SmtpServer) -> None:
    member = live.seeded["member"]
    seen = len(smtp.to(member["email"]))
    asked = httpx.post(f"{live.base_url}/api/v1/password-reset",
                       json={"email": member["email"]}, timeout=10)
    assert asked.status_code == 202
    path = wait_for_link(smtp, member["email"], seen)

    clients = [httpx.Client(base_url=live.base_url, timeout=30) for _ in range(8)]
    forms = [CSRF.search(c.get(path).text) for c in clients]
    assert all(forms)
    start = threading.Barrier(len(clients))
    answers: list[tuple[int, str]] = []

    def submit(number: int) -> None:
        password = f"parallel password number {number}"
        start.wait()
        answer = clients[number].post(path, data={
            "csrf_token": forms[number].group(1),  # type: ignore[union-attr]
            "password": password, "password_confirm": password})
        answers.append((answer.status_code, password))

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for client in clients:
        client.close()
    statuses = sorted(status for status, _ in answers)
    assert statuses == [303] + [410] * (len(clients) - 1), answers
    winner = next(password for status, password in answers if status == 303)
    assert sign_in(live, member["email"], winner).status_code == 200
    assert sign_in(live, member["email"], member["password"]).status_code == 401
    assert httpx.get(f"{live.base_url}{path}", timeout=10).status_code == 410
    # put the demo password back for the other tests, through the CLI
    live.cli("users", "set-password", "--account", live.seeded["account"], "--email",
             member["email"], stdin=member["password"] + "\n")


def test_asking_for_a_link_answers_alike_and_as_fast_for_any_address(live: Server) -> None:
    """Both answers are sent before any lookup; the medians of 30 alternating requests
    differ by less than a few milliseconds."""
    admin = live.seeded["admin"]["email"]
    timings: dict[str, list[float]] = {"known": [], "unknown": []}
    bodies: set[tuple[int, str]] = set()
    with httpx.Client(base_url=live.base_url, timeout=10) as client:
        for round_ in range(30):
            for kind, address in (("known", admin), ("unknown", f"nobody{round_}@nowhere.test")):
                started = time.perf_counter()
                answer = client.post("/api/v1/password-reset", json={"email": address})
                timings[kind].append(time.perf_counter() - started)
                bodies.add((answer.status_code, answer.text))
    assert len(bodies) == 1 and next(iter(bodies))[0] == 202
    known, unknown = (statistics.median(timings[k]) for k in ("known", "unknown"))
    print(f"password-reset answer medians: known {known * 1000:.2f} ms, "
          f"unknown {unknown * 1000:.2f} ms")
    assert abs(known - unknown) < max(0.005, 0.5 * min(known, unknown)), (known, unknown)


def test_the_cli_sets_a_password_from_stdin_and_signs_the_user_out(live: Server) -> None:
    member = live.seeded["member"]
    session = sign_in(live, member["email"], member["password"])
    assert session.status_code == 200
    cookies: Any = session.cookies
    assert httpx.get(f"{live.base_url}/api/v1/users", cookies=cookies,
                     timeout=10).status_code == 200
    done = live.cli("users", "set-password", "--account", live.seeded["account"], "--email",
                    member["email"], stdin=NEW_PASSWORD + "\n")
    assert "password set for" in done.stdout
    assert httpx.get(f"{live.base_url}/api/v1/users", cookies=cookies,
                     timeout=10).status_code == 401
    assert sign_in(live, member["email"], NEW_PASSWORD).status_code == 200
    weak = live.cli("users", "set-password", "--account", live.seeded["account"], "--email",
                    member["email"], stdin="1q2w3e4r5t6y\n", check=False)
    assert weak.returncode != 0 and "commonly used" in weak.stderr
    empty = live.cli("users", "set-password", "--account", live.seeded["account"], "--email",
                     member["email"], stdin="", check=False)
    assert empty.returncode != 0 and "no password on standard input" in empty.stderr
    live.cli("users", "set-password", "--account", live.seeded["account"], "--email",
             member["email"], stdin=member["password"] + "\n")
