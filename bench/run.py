"""`make bench`: run every benchmark in one go, print a table, write bench/results.json.

Side by side in one run: tallykey's verifier (cache hit / miss, 1k vs 1M tokens, memory
with the cache full), the djangorestframework-api-key peer (own virtualenv, own SQLite
store, same number of keys), and HTTP throughput/latency with wrk on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEER_VENV = HERE / ".peer-venv"
PEER_PACKAGES = ["django>=4.2", "djangorestframework", "djangorestframework-api-key>=3"]


def peer_python() -> Path:
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        venv.create(PEER_VENV, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PEER_PACKAGES],
                       check=True)
    return python


def run_json(command: list[str]) -> dict[str, Any]:
    print("$", " ".join(command[1:]), file=sys.stderr, flush=True)
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs")
    args = parser.parse_args()
    large, seconds, rounds = (100_000, 3, 50_000) if args.quick else (1_000_000, 10, 200_000)
    keys = 1000
    results = {
        "verification": run_json([sys.executable, str(HERE / "verification.py"), "--small",
                                  str(keys), "--large", str(large), "--rounds", str(rounds)]),
        "peer": run_json([str(peer_python()), str(HERE / "peer_drf.py"), "--keys", str(keys),
                          "--rounds", "5000"]),
        "http": run_json([sys.executable, str(HERE / "throughput.py"), "--seconds",
                          str(seconds)]),
        "limits": run_json([sys.executable, str(HERE / "limits.py"), "--rounds", str(rounds), "--seconds", str(seconds)]),  # noqa: E501
    }
    verification, peer, http = results["verification"], results["peer"], results["http"]
    hit = verification["store_1k"]["hit"]["median_us"]
    miss = verification["store_1k"]["miss"]["median_us"]
    large_miss = verification["store_large"]["miss"]["median_us"]
    results["ratios"] = {
        "peer_over_hit": round(peer["median_us"] / hit, 1),
        "peer_over_miss": round(peer["median_us"] / miss, 1),
        "large_miss_over_small_miss": round(large_miss / miss, 2),
        "middleware_throughput": http["middleware_throughput_ratio"],
    }
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = [
        ("verify, cache hit (median)", f"{hit} µs", "≤ 3 µs"),
        ("verify, cache miss, SQLite, 1k tokens (median)", f"{miss} µs", "≤ 100 µs"),
        (f"verify, cache miss, {large:,} tokens (median)", f"{large_miss} µs",
         "≤ 2× the 1k miss"),
        ("peer djangorestframework-api-key is_valid (median)", f"{peer['median_us']} µs", ""),
        ("peer / tallykey hit", f"{results['ratios']['peer_over_hit']}×", "≥ 50×"),
        ("plain app under uvicorn", f"{http['plain_app']['rps']:,} req/s, p50 "
         f"{http['plain_app']['p50_ms']} ms, p99 {http['plain_app']['p99_ms']} ms", ""),
        ("same app behind TallykeyMiddleware", f"{http['middleware_app']['rps']:,} req/s, "
         f"p50 {http['middleware_app']['p50_ms']} ms, p99 {http['middleware_app']['p99_ms']}"
         " ms", ""),
        ("middleware / plain throughput", f"{http['middleware_throughput_ratio']:.0%}",
         "≥ 90%"),
        ("/auth/request, tallykey serve, 1 worker", f"{http['auth_request']['rps']:,} req/s, "
         f"p99 {http['auth_request']['p99_ms']} ms", "≥ 10,000 req/s, p99 ≤ 5 ms"),
        ("RSS with the cache full", f"{verification['memory']['rss_mb_cache_full']} MB "
         f"({verification['memory']['cache_entries']:,} entries)", "< 300 MB"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  {'result':<48}  target")
    for name, value, target in rows:
        print(f"{name.ljust(width)}  {value:<48}  {target}")
    print(f"\nwritten: {HERE / 'results.json'}")


if __name__ == "__main__":
    main()
