"""The container image and the compose cluster (deploy/container, deploy/compose.yaml), as an
operator runs them: `make image`, `compose up -d`, then through the cluster's nginx on
127.0.0.1: the first admin from the set-up link in the logs, a token made over the API,
a request through auth_request to the sample app, a revocation that both nodes then refuse,
and `compose down -v`.

Needs a Docker daemon (deploy/container/ci-prepare.sh installs Debian's docker.io,
docker-compose and mmdebstrap and starts one); skipped without one, except in CI.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import IN_CI
from .conftest import free_port

# a cold `make image` builds the base images too (mmdebstrap): minutes on a shared machine
pytestmark = [pytest.mark.serial, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
DOCKER = "/usr/bin/docker"  # Debian's client (see deploy/container/build.sh)
CI_SOCKET = "unix:///tmp/tallykey-docker/docker.sock"  # ci-prepare.sh's daemon
PASSWORD = "compose cluster password"  # a throwaway cluster's first admin
FORM_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
SETUP_LINK = re.compile(r"(http://\S+)(/console/setup/[A-Za-z0-9_-]+)")


def docker_env() -> dict[str, str] | None:
    """The environment that reaches a Docker daemon, or None when none answers."""
    if not os.access(DOCKER, os.X_OK):
        return None
    candidates = [os.environ.get("DOCKER_HOST"), "unix:///var/run/docker.sock", CI_SOCKET]
    for host in filter(None, candidates):
        env = {**os.environ, "DOCKER_HOST": host}
        probe = subprocess.run([DOCKER, "info"], env=env, capture_output=True, timeout=30,
                               check=False)
        if probe.returncode == 0:
            return env
    return None


def compose_command() -> list[str] | None:
    """Compose v2 (`docker compose`) or v1 (`docker-compose`), whichever is installed."""
    v2 = subprocess.run([DOCKER, "compose", "version"], capture_output=True, check=False)
    if v2.returncode == 0:
        return [DOCKER, "compose"]
    v1 = shutil.which("docker-compose")
    return [v1] if v1 else None


ENV = docker_env()
COMPOSE = compose_command() if ENV else None
if (ENV is None or COMPOSE is None) and not IN_CI:
    pytest.skip("no Docker daemon or compose (deploy/container/ci-prepare.sh sets them up)",
                allow_module_level=True)


class Cluster:
    def __init__(self, env: dict[str, str], compose: list[str]) -> None:
        self.port = free_port()
        self.project = f"tallykey-e2e-{secrets.token_hex(3)}"
        # a /24 of its own, so a cluster an operator runs on this machine is left alone
        self.env = {**env, "TK_PORT": str(self.port),
                    "TK_NET": f"172.28.{100 + secrets.randbelow(150)}"}
        self.compose = [*compose, "-p", self.project, "-f", str(COMPOSE_FILE)]
        self.base_url = f"http://127.0.0.1:{self.port}"

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*self.compose, *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)
        assert done.returncode == 0, f"compose {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done

    def logs(self, *services: str) -> str:
        return self.run("logs", "--no-color", *services, timeout=60).stdout

    def node_verify(self, node: str, token: str) -> dict[str, Any]:
        """POST /api/v1/verify on one node directly (from inside the cluster's network)."""
        script = ("import json, sys, urllib.request; request = urllib.request.Request("
                  f"'http://{node}:8000/api/v1/verify', data=sys.stdin.buffer.read(), "
                  "headers={'Content-Type': 'application/json'}); "
                  "print(urllib.request.urlopen(request, timeout=5).read().decode())")
        done = subprocess.run([*self.compose, "exec", "-T", "worker", "python", "-c", script],
                              env=self.env, input=json.dumps({"token": token}),
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        verdict: dict[str, Any] = json.loads(done.stdout)
        return verdict


def wait_for(condition: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            result = condition()
        except (httpx.HTTPError, AssertionError):
            result = None
        if result:
            return result
        assert time.monotonic() < deadline, f"{what} within {seconds} s"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    assert ENV is not None and COMPOSE is not None, "CI needs Docker and compose"
    started = time.monotonic()
    build = subprocess.run(["make", "image"], cwd=ROOT, env=ENV, capture_output=True,
                           text=True, timeout=900, check=False)
    assert build.returncode == 0, f"make image:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}"
    built = time.monotonic()
    cluster = Cluster(ENV, COMPOSE)
    try:
        cluster.run("up", "-d")
        with httpx.Client(base_url=cluster.base_url, timeout=10) as http:
            wait_for(lambda: http.get("/healthz").status_code == 200, 120,
                     "the cluster answers through nginx")
        print(f"\nmake image {built - started:.0f} s; up to a working cluster "
              f"{time.monotonic() - built:.0f} s")
        yield cluster
    except BaseException:
        print(cluster.run("ps").stdout, cluster.logs()[-6000:])
        raise
    finally:
        cluster.run("down", "-v", "--remove-orphans", timeout=180)
        left = subprocess.run([DOCKER, "ps", "-aq", "--filter",
                               f"label=com.docker.compose.project={cluster.project}"],
                              env=ENV, capture_output=True, text=True, check=False)
        assert left.stdout.strip() == "", "compose down -v left containers behind"


def test_the_image_runs_as_a_user_without_a_compiler_or_our_tests(cluster: Cluster) -> None:
    inspected = subprocess.run([DOCKER, "image", "inspect", "tallykey:latest"], env=ENV,
                               capture_output=True, text=True, check=True)
    image = json.loads(inspected.stdout)[0]
    config = image["Config"]
    assert config["User"] == "tallykey" and config["Entrypoint"] == ["tallykey"]
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
    assert image["Size"] <= 250 * 1000 * 1000, image["Size"]
    assert not [e for e in config["Env"] if re.match(r"TALLYKEY_(KEK|.*SECRET|.*TOKEN)", e)]
    script = ("import shutil, sys, glob; print(sorted({shutil.which(c) for c in "
              "('cc', 'gcc', 'g++', 'clang', 'ld', 'make')} - {None}), "
              "glob.glob('/opt/tallykey/**/test_compose.py', recursive=True) "
              "+ glob.glob('/opt/tallykey/lib/python3.11/site-packages/tests'))")
    found = subprocess.run([DOCKER, "run", "--rm", "--entrypoint", "python", "tallykey:latest",
                            "-c", script], env=ENV, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[] []"
    version = subprocess.run([DOCKER, "run", "--rm", f"tallykey:{VERSION}", "--version"],
                             env=ENV, capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"tallykey {VERSION}"


def set_up_first_admin(cluster: Cluster, http: httpx.Client) -> str:
    """Open the set-up link; the first admin's e-mail address. serve1 starts first and
    prints it; serve2, started once serve1 is healthy, finds it pending. (Before the
    set-up link was claimed once per store, every node printed a new one, replacing the
    previous: then serve2's is the one that works.)"""
    found = wait_for(lambda: SETUP_LINK.search(cluster.logs("serve1")), 30,
                     "a set-up link in serve1's log")
    found = SETUP_LINK.search(cluster.logs("serve2")) or found
    assert found.group(1) == cluster.base_url  # the public URL, through nginx
    page = http.get(found.group(2))
    assert page.status_code == 200, page.text
    form = FORM_FIELD.search(page.text)
    assert form, page.text
    email = "admin@compose.test"
    done = http.post(found.group(2), data={
        "csrf_token": form.group(1), "account_name": "Compose", "email": email,
        "password": PASSWORD})
    assert done.status_code == 303, done.text
    assert http.get(found.group(2)).status_code != 200  # the link works once
    return email


def test_doctor_passes_in_the_compose_cluster(cluster: Cluster) -> None:
    """The documented first step after `up`: every check of `tallykey doctor` passes."""
    done = subprocess.run([*cluster.compose, "exec", "-T", "serve1", "tallykey", "doctor"],
                          env=cluster.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fail" not in done.stdout.lower(), done.stdout


def test_the_compose_cluster_from_the_setup_link_to_a_revocation(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.base_url, timeout=15) as http:
        email = set_up_first_admin(cluster, http)
        session = http.post("/api/v1/session", json={"email": email, "password": PASSWORD})
        assert session.status_code == 200, session.text
        csrf = {"X-CSRF-Token": session.json()["csrf_token"]}
        made = http.post("/api/v1/tokens", headers=csrf,
                         json={"name": "compose e2e", "expires_in_days": 7})
        assert made.status_code == 201, made.text
        listed = cluster.run("exec", "-T", "worker", "tallykey", "accounts", "list", "--json")
        assert [a["name"] for a in json.loads(listed.stdout)] == ["Compose"]
        token, token_id = made.json()["token"], made.json()["id"]
        bearer = {"Authorization": f"Bearer {token}"}

        # through auth_request: the sample app sees the identity, never the token
        with httpx.Client(base_url=cluster.base_url, timeout=15) as outsider:
            refused = outsider.get("/app/orders")
            assert refused.status_code == 401 and refused.json()["error"] == "missing_token"
            forged = outsider.get("/app/orders", headers={"Tallykey-Account": "someone"})
            assert forged.status_code == 401
            passed = [outsider.get(f"/app/orders/{n}", headers=bearer) for n in range(4)]
        for answer in passed:
            assert answer.status_code == 200, answer.text
            seen = answer.json()
            assert seen["app"] == "sample" and seen["token_id"] == token_id
            assert seen["account"] and seen["authorization"] == ""
        for node in ("serve1", "serve2"):
            assert cluster.node_verify(node, token)["allowed"] is True

        revoked = http.delete(f"/api/v1/tokens/{token_id}", headers=csrf)
        assert revoked.status_code == 200, revoked.text

    # every node refuses it (within the propagation bound), and so does nginx
    for node in ("serve1", "serve2"):
        verdict = wait_for(lambda node=node: (lambda v: v if not v["allowed"] else None)(
            cluster.node_verify(node, token)), 10, f"{node} refuses the revoked token")
        assert verdict["status"] == 401 and "revoked" in verdict["message"], verdict
    with httpx.Client(base_url=cluster.base_url, timeout=15) as outsider:
        after = [outsider.get("/app/orders", headers=bearer) for _ in range(4)]
    assert [a.status_code for a in after] == [401] * 4
    assert {a.json()["error"] for a in after} == {"invalid_token"}
