"""A real OpenID Provider for the single sign-on tests: panva/oidc-provider (OpenID
Certified) run by Node from `tests/people/oidc/` (`npm ci` there installs it; `.ci/run`
does). `authorize` signs a person in on the provider's own development pages with httpx,
as a browser would, and returns the redirect back to tallykey."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import IN_CI
from ..e2e.conftest import free_port

PROVIDER_DIR = Path(__file__).parent / "oidc"
CLIENT_SECRET = "tallykey-test-client-secret-0123456789"


def new_signing_key(kid: str) -> dict[str, Any]:
    from joserfc.jwk import RSAKey

    key = RSAKey.generate_key(2048, private=True,
                              parameters={"kid": kid, "use": "sig", "alg": "RS256"})
    return dict(key.as_dict(private=True))


def node_ready() -> str:
    """The node binary with oidc-provider installed, or skip (fail in CI)."""
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "node is missing (apt-get install nodejs npm)"
    elif not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            problem = "npm is missing (apt-get install npm)"
        else:
            done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=PROVIDER_DIR,
                                  capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                problem = f"npm ci failed: {done.stderr[-500:]}"
    if problem:
        if IN_CI:
            pytest.fail(f"the OpenID provider must run in CI: {problem}")
        pytest.skip(problem)
    assert node is not None
    return node


@dataclass
class Provider:
    issuer: str
    process: subprocess.Popen[bytes]

    def authorize(self, url: str, login: str, redirect_prefix: str) -> str:
        """Sign `login` in at the provider; the URL it redirects back to tallykey."""
        # A new connection per request: the provider (Node) closes an idle kept-alive one
        # after 5 s, and a loaded machine can reuse it just then ("Server disconnected").
        with httpx.Client(timeout=10,
                          limits=httpx.Limits(max_keepalive_connections=0)) as browser:
            answer = browser.get(url)
            for _ in range(10):
                location = answer.headers.get("location")
                if answer.status_code in (302, 303) and location:
                    target = str(answer.url.join(location))
                    if target.startswith(redirect_prefix):
                        return target
                    answer = browser.get(target)
                    continue
                form = re.search(r'<form[^>]*action="([^"]+)"', answer.text)
                assert form, f"no sign-in form at the provider: {answer.status_code}"
                fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"',
                                         answer.text))
                fields.update(login=login, password="any password")
                answer = browser.post(str(answer.url.join(form.group(1))), data=fields)
        raise AssertionError("the provider never redirected back")


@contextmanager
def running_provider(clients: list[dict[str, Any]], accounts: dict[str, dict[str, Any]],
                     keys: list[dict[str, Any]], log: Path) -> Iterator[Provider]:
    node = node_ready()
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = dict(os.environ, ISSUER=issuer, PORT=str(port), CLIENTS=json.dumps(clients),
               ACCOUNTS=json.dumps(accounts), JWKS=json.dumps({"keys": keys}))
    with log.open("ab") as output:
        process = subprocess.Popen([node, str(PROVIDER_DIR / "provider.mjs")], env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the provider exited: {log.read_text()}")
            try:
                if httpx.get(f"{issuer}/.well-known/openid-configuration",
                             timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the provider did not start: {log.read_text()}")
            time.sleep(0.1)
        yield Provider(issuer, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def client(client_id: str, redirect_uri: str) -> dict[str, Any]:
    return {"client_id": client_id, "client_secret": CLIENT_SECRET,
            "redirect_uris": [redirect_uri], "grant_types": ["authorization_code"],
            "response_types": ["code"]}
