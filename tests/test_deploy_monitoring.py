"""The alert rules and the dashboard in deploy/: valid (`promtool check rules`, JSON), and
every tallykey metric they use is exported by a real server's /metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import IN_CI
from .e2e.conftest import Server, manage, new_token, running_server

ROOT = Path(__file__).parents[1]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "tallykey.json"
METRIC = re.compile(r"\btallykey_[a-z0-9_]+")
#: What a Prometheus query may add to an exported name.
SUFFIXES = ("_bucket", "_count", "_sum")


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def used_metrics() -> set[str]:
    text = ALERTS.read_text() + "\n".join(dashboard_queries())
    return set(METRIC.findall(text))


def test_promtool_accepts_the_alert_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if IN_CI:
            pytest.fail("promtool is required in CI (apt-get install prometheus)")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    result = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_the_alerts_cover_what_operators_must_hear_about() -> None:
    text = ALERTS.read_text()
    for alert in ("TallykeyStoreDown", "TallykeyPropagationIncomplete",
                  "TallykeyOutboxBacklog", "TallykeyServerErrors", "TallykeyClockOffset",
                  "TallykeyDecoyTripped"):
        assert f"alert: {alert}" in text
        assert alert in (ROOT / "docs" / "operations.md").read_text()


def test_the_dashboard_is_grafana_json_with_queries() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "tallykey" and len(board["panels"]) >= 8
    assert all(METRIC.search(expr) for expr in dashboard_queries())


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("monitoring"), "sqlite") as server:
        yield server


def test_every_metric_the_rules_and_the_dashboard_use_is_exported(live: Server) -> None:
    made = new_token(live)  # traffic: verifications, answers, a change that propagates
    headers = {"Authorization": f"Bearer {made['token']}"}
    assert httpx.get(f"{live.base_url}/auth/request", headers=headers).status_code == 204
    assert manage(live, "POST", f"/api/v1/tokens/{made['id']}/revoke").status_code == 200
    deadline = time.monotonic() + 15  # verifiers publish their counts once a second
    while True:
        scraped = httpx.get(f"{live.base_url}/metrics", timeout=10)
        assert scraped.status_code == 200
        exported = {line.split("{")[0].split(" ")[0] for line in scraped.text.splitlines()
                    if line and not line.startswith("#")}
        missing = sorted(name for name in used_metrics()
                         if name not in exported
                         and not any(name + suffix in exported for suffix in SUFFIXES))
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not missing, f"used by deploy/ but not exported: {missing}"
    assert "tallykey_store_up 1.0" in scraped.text
    assert re.search(r'tallykey_http_responses_total\{code="2xx"\} [1-9]', scraped.text)


def test_doctor_reaches_the_node_at_the_public_url(live: Server) -> None:
    env = {**live.env, "TALLYKEY_PUBLIC_URL": live.base_url}
    result = subprocess.run([str(Path(sys.executable).with_name("tallykey")), "doctor",
                             "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    public = checks["public_url"]
    assert public["status"] == "warn"  # reached, but plain http
    assert "reaches a tallykey node" in public["detail"] and "https" in public["detail"]
