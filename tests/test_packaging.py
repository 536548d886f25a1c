"""The published package: built as a wheel from this checkout, it carries the licence, the
metadata a package index shows, the typing marker (mypy users of `from tallykey import
Verifier` get real types), and every data file the server needs; the README stands alone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MYPY = Path(sys.executable).with_name("mypy")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w",
                    str(out), str(ROOT)], check=True, timeout=300)
    (built,) = out.glob("tallykey-*.whl")
    return built


def test_the_wheel_has_licence_metadata_typing_marker_and_data_files(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(info).decode())
        licence = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
        assert "Apache License" in archive.read(licence).decode()
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Author"]
    classifiers = metadata.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers and len(classifiers) >= 5
    assert "../" not in (metadata.get_payload() or "")
    urls = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL") or [])
    for label in ("Homepage", "Documentation", "Source", "Issues", "Changelog"):
        assert urls.get(label, "").startswith("https://tallykey.dev"), (label, urls)
    assert "tallykey/py.typed" in names
    for needed in ("tallykey/console/templates/base.html", "tallykey/console/static/console.css",
                   "tallykey/notify/templates/token_created.txt",
                   "tallykey/schema/migrations/env.py"):
        assert needed in names, needed
    assert any(n.startswith("tallykey/schema/migrations/versions/0001") for n in names)


def test_mypy_sees_the_installed_package_as_typed(wheel: Path, tmp_path: Path) -> None:
    env = tmp_path / "venv"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True
                          ).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", site, str(wheel)], check=True, timeout=300)
    user = tmp_path / "user_code.py"
    user.write_text("from tallykey import Verifier\n"
                    "verdict = Verifier(database_url='sqlite://').verify(None, '127.0.0.1')\n"
                    "allowed: bool = verdict.allowed\n"
                    "wrong: int = verdict.message\n")
    checked = subprocess.run([str(MYPY), "--python-executable", str(python),
                              "--no-incremental", str(user)], capture_output=True, text=True,
                             cwd=tmp_path, timeout=300)
    assert "missing library stubs or py.typed marker" not in checked.stdout, checked.stdout
    # real types, not Any: the deliberate mistake is the only error
    assert 'Incompatible types in assignment (expression has type "str"' in checked.stdout
    assert "Found 1 error" in checked.stdout, checked.stdout
    assert sysconfig.get_paths()  # the test's own interpreter is untouched


def test_the_client_installs_alone(wheel: Path, tmp_path: Path) -> None:
    """`pip install tallykey` is for integrations: it requires httpx and nothing else, and
    the client SDK runs in an environment that has no web framework, ORM or pydantic."""
    with zipfile.ZipFile(wheel) as archive:
        info = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(info).decode())
    required = metadata.get_all("Requires-Dist") or []
    unconditional = [r for r in required if "extra ==" not in r]
    assert [re.split(r"[<>=\[ ]", r)[0] for r in unconditional] == ["httpx"]
    assert any("fastapi" in r and 'extra == "server"' in r for r in required)

    env = tmp_path / "venv"
    venv.create(env, with_pip=False)  # no system site-packages: only what we put there
    python = env / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                                "get_paths()['purelib'])"], capture_output=True, text=True,
                               check=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(site), str(wheel)], check=True, timeout=300)
    ours = Path(sysconfig.get_paths()["purelib"])
    for package in ("httpx", "httpcore", "h11", "anyio", "sniffio", "idna", "certifi",
                    "typing_extensions.py"):  # httpx and what it requires
        if (ours / package).exists():
            (site / package).symlink_to(ours / package)
    script = ("import sys\n"
              "from tallykey.client import Client, TokenMalformed\n"
              "from tallykey import AsyncClient, Client as Same\n"
              "assert Same is Client\n"
              "try:\n"
              "    Client('tlk_eu1_short', base_url='http://127.0.0.1:9').connect()\n"
              "except TokenMalformed as error:\n"
              "    print('refused offline:', error.message)\n"
              "with Client(base_url='http://127.0.0.1:9') as client:\n"
              "    print('verify-only client:', client.base_url)\n"
              "heavy = {'fastapi', 'starlette', 'sqlalchemy', 'psycopg', 'pydantic', 'typer'}\n"
              "print('loaded:', sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n")
    ran = subprocess.run([str(python), "-c", script], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "refused offline:" in ran.stdout and "loaded: []" in ran.stdout
    assert "verify-only client: http://127.0.0.1:9" in ran.stdout
    # every server-side name: one line naming the extra, not a traceback into redis & co
    for name in ("Verifier", "TallykeyMiddleware", "TallykeyAuth", "Verdict"):
        caught = subprocess.run(
            [str(python), "-c", f"try:\n    from tallykey import {name}\n"
             "except ImportError as error:\n"
             "    print(type(error).__name__, error.__cause__, error.__suppress_context__)\n"
             "    print(error)\n"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert caught.returncode == 0, caught.stderr
        kind, line = caught.stdout.splitlines()
        assert kind == "ServerExtraMissing None True", caught.stdout
        # the embedded extra is enough for these names (test_the_embedded_extra_runs_…)
        assert line.startswith(f"tallykey.{name} needs the embedded extra (")
        assert line.endswith("pip install 'tallykey[embedded]' (or pip install "
                             "'tallykey[server]' for the whole server)"), line
        uncaught = subprocess.run([str(python), "-c", f"from tallykey import {name}"],
                                  capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert uncaught.returncode == 1
        assert uncaught.stderr.count("Traceback") == 1, uncaught.stderr  # no chain
        assert "During handling" not in uncaught.stderr
        assert uncaught.stderr.strip().splitlines()[-1] == f"tallykey.ServerExtraMissing: {line}"
    # the packages behind them, imported directly: the same one line, naming the extra
    for statement, extra in (
            ("from tallykey.auth.middleware import TallykeyMiddleware", "embedded"),
            ("from tallykey.auth.verifier import Verifier", "embedded"),
            ("from tallykey.server.app import create_app", "server")):
        deep = subprocess.run([str(python), "-c", statement], capture_output=True,
                              text=True, timeout=60, cwd=tmp_path)
        assert deep.returncode == 1
        assert deep.stderr.count("Traceback") == 1, deep.stderr
        last = deep.stderr.strip().splitlines()[-1]
        assert last.startswith("tallykey.ServerExtraMissing: tallykey."), last
        assert f"pip install 'tallykey[{extra}]'" in last, last
    # the server is not there, and the command says how to get it in one line
    server = subprocess.run([str(python), "-c", "from tallykey.cli import main; main()"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert server.returncode == 1
    assert "pip install 'tallykey[server]'" in server.stderr
    assert "Traceback" not in server.stderr


def test_the_readme_stands_alone() -> None:
    readme = (ROOT / "README.md").read_text()
    lines = [line.strip() for line in readme.splitlines() if line.strip()]
    assert lines[1].startswith("make run") and lines[2].startswith("make test")
    assert "../" not in readme and "shared/SPEC" not in readme
    assert "Apache-2.0" in readme and (ROOT / "LICENSE").is_file()
    for target in re.findall(r"\]\(([^)]+)\)", readme):
        if target.startswith(("http://", "https://")):
            continue
        path = target.split("#")[0]
        assert (ROOT / path).exists(), f"README links to a missing file: {target}"


#: What `tallykey[server]` has and `tallykey[embedded]` must not pull in.
SERVER_ONLY = {"fastapi", "uvicorn", "typer", "rich", "click", "authlib", "joserfc",
               "alembic", "argon2-cffi", "cryptography", "redis", "segno", "pyotp",
               "python-multipart", "email-validator", "defusedxml", "swagger-ui-bundle-v2",
               "uvloop", "httptools", "watchfiles", "websockets"}

EMBEDDED_APP = """
import sys
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tallykey import TallykeyMiddleware, Verifier


async def hello(request):
    return JSONResponse({"account": request.state.tallykey.account})


async def docs(request):
    return JSONResponse({"docs": "public"})


app = Starlette(routes=[Route("/hello", hello), Route("/docs", docs)])
verifier = Verifier()
client = TestClient(TallykeyMiddleware(app, verifier=verifier, public_paths=["/docs"]))
token = sys.argv[1]
print("allowed", client.get("/hello", headers={"Authorization": "Bearer " + token}).json())
missing = client.get("/hello")
print("refused", missing.status_code, missing.json()["reason"])
print("public", client.get("/docs").json())
verifier.close()
loaded = {m.split(".")[0] for m in sys.modules}
print("loaded:", sorted(loaded & {"fastapi", "uvicorn", "typer", "rich", "click", "authlib",
                                  "alembic", "argon2", "redis", "cryptography"}))
"""


def test_the_embedded_extra_runs_the_middleware_alone(wheel: Path, tmp_path: Path) -> None:
    """`pip install 'tallykey[embedded]'` in a fresh virtualenv (issue 27): the verifier
    and the middleware protect a Starlette app against a real store (made by the server's
    CLI), with none of the console, CLI or OpenID packages; Redis is asked for only
    when configured, in one line."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                    f"{wheel}[embedded]"], check=True, timeout=600,
                   capture_output=True)
    frozen = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True, check=True).stdout
    installed = {line.split("==")[0].lower().replace("_", "-")
                 for line in frozen.splitlines() if "==" in line}
    assert not installed & SERVER_ONLY, installed & SERVER_ONLY
    assert {"starlette", "sqlalchemy", "psycopg"} <= installed
    assert len(installed - {"pip", "setuptools", "tallykey"}) <= 22, sorted(installed)

    store = {k: v for k, v in os.environ.items() if not k.startswith("TALLYKEY_")}
    store["TALLYKEY_DATA_DIR"] = str(tmp_path / "data")
    seeded = subprocess.run([str(Path(sys.executable).with_name("tallykey")), "demo",
                             "--seed-only", "--json"], env=store, capture_output=True,
                            text=True, check=True, timeout=120)
    token = json.loads(seeded.stdout)["admin"]["token"]
    ran = subprocess.run([str(python), "-c", EMBEDDED_APP, token], env=store,
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "allowed {'account': 'demo'}" in ran.stdout, ran.stdout
    assert "refused 401 missing" in ran.stdout
    assert "public {'docs': 'public'}" in ran.stdout
    assert "loaded: []" in ran.stdout

    with_redis = subprocess.run(
        [str(python), "-c", "from tallykey import Verifier; Verifier()"],
        env={**store, "TALLYKEY_REDIS_URL": "redis://127.0.0.1:9/0"},
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert with_redis.returncode == 1
    last = with_redis.stderr.strip().splitlines()[-1]
    assert last == ("ModuleNotFoundError: TALLYKEY_REDIS_URL is set but the redis package "
                    "is not installed: pip install 'tallykey[embedded,redis]'"), last


#: The import names of SERVER_ONLY's distributions.
SERVER_ONLY_MODULES = {"fastapi", "uvicorn", "typer", "rich", "click", "authlib", "joserfc",
                       "alembic", "argon2", "cryptography", "redis", "segno", "pyotp",
                       "multipart", "python_multipart", "email_validator", "defusedxml",
                       "swagger_ui_bundle", "uvloop", "httptools", "watchfiles",
                       "websockets"}

BLOCKED_IMPORTS = """
import importlib.abc, sys
blocked = set(sys.argv[1].split(","))
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None
sys.meta_path.insert(0, Refuse())
from tallykey.auth.middleware import TallykeyMiddleware
from tallykey.auth.verifier import Verifier
from tallykey.monitor.alerts import UsageMonitor
print("imported")
import logging
from tallykey.monitor.containment import Containment, Incident
logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
containment = Containment(None, None, None, None, None)  # no token service to build
assert containment.tokens is None
containment.start([Incident("tok_embedded", "acct", "new_network", "a new network")])
"""


def test_the_verifier_imports_without_the_servers_packages() -> None:
    """The quick form of the embedded-extra check above: with every server-only package
    refused, the middleware, the verifier and the alerts (containment, decoys, webhook
    drafts) still import — a module-level import of one of them in that path fails here
    in a second, before the wheel test."""
    ran = subprocess.run([sys.executable, "-c", BLOCKED_IMPORTS,
                          ",".join(sorted(SERVER_ONLY_MODULES))],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and "imported" in ran.stdout, ran.stderr[-2000:]
    # README: an embedded-only service raises the alert and logs the token it left to the
    # server's nodes (it cannot suspend without tallykey[server]).
    assert ("token tok_embedded not contained by this process: an embedded verifier "
            "without tallykey[server] cannot suspend") in ran.stdout, ran.stdout
