"""`bench/run.py --smoke`: every step of `make bench` runs on tiny sizes and every figure
of its table is produced, so the benchmark cannot rot between the runs that measure.
Timings are never asserted here (they mean nothing at these sizes)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import IN_CI

ROOT = Path(__file__).resolve().parents[1]


def test_the_benchmark_runs_every_step_and_produces_every_figure(tmp_path: Path) -> None:
    if shutil.which("wrk") is None and not IN_CI:
        pytest.skip("wrk is not installed (apt-get install wrk)")
    output = tmp_path / "results.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke",
                           "--output", str(output)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(output.read_text())
    verification = results["verification"]
    for figure in ("hit", "floor"):
        assert verification[figure]["median_us"] > 0
        assert verification[figure]["n"] > 0
    assert set(verification["miss"]) >= {"sqlite_small", "sqlite_large", "postgres_small",
                                         "postgres_large"}
    assert verification["memory"]["cache_entries"] > 0
    memory = results["memory"]
    assert memory["full"]["cache_entries"] == memory["tokens"] > 0
    assert memory["full"]["bytes_per_token"] > 0
    assert memory["bounded"]["within_bound"] and memory["bounded"]["evictions"] > 0
    assert results["peer"]["median_us"] > 0
    http = results["http"]
    for variant in ("bare_app", "middleware", "auth_request", "bare_app_granian",
                    "auth_request_granian", "nginx_204"):
        assert http[variant]["rps"] > 0, variant
        assert http[variant]["non_2xx"] == 0, variant
    limits = results["limits"]
    assert set(limits["verify_hit"]) == {"plain", "rate_limited", "credits"}
    assert limits["verify_hit_redis"]["rate_limited"]["n"] > 0
    assert set(limits["auth_request"]) == {"plain", "rate_limited", "credits"}
    assert set(results["ratios"]) >= {"hit_over_floor", "peer_over_hit",
                                      "large_miss_over_small_miss",
                                      "postgres_large_over_sqlite_large"}
    cluster = results["cluster"]
    for mode in ("direct", "pgbouncer"):
        assert [size["nodes"] for size in cluster[mode]] == [1, 2], mode
        for size in cluster[mode]:
            assert size["incomplete"] == 0
            for figure in ("revoke_p50_ms", "revoke_p99_ms", "pg_connections_most",
                           "feed_reads_per_s", "rss_mb_per_node"):
                assert size[figure] > 0, (mode, figure)
    # the printed table has a row for every figure
    for row in ("verify, cache hit (median)", "peer djangorestframework-api-key",
                "cache miss, PostgreSQL", "/auth/request, tallykey serve (uvicorn)",
                "nginx `return 204`", "RSS with the cache full", "RSS per cached token",
                "cache bound (TALLYKEY_CACHE_MAX_TOKENS)", "token with credits",
                "2 nodes, PostgreSQL: revoke", "2 nodes, PgBouncer: revoke"):
        assert row in done.stdout, row
