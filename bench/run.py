"""`make bench`: run every benchmark in one go, print a table, write bench/results.json.

Side by side in one run: tallykey's verifier (cache hit against the SHA-256 + dict floor,
misses on SQLite and PostgreSQL at a small and a large store, memory with the cache
full), the djangorestframework-api-key peer (own virtualenv, own SQLite store, same
number of keys), memory per cached token with a whole store cached and the cache bound
at work (`memory.py`), and over HTTP (wrk on 127.0.0.1, interleaved rounds): server CPU per
request, throughput and latency of a bare app, the same app behind `TallykeyMiddleware`,
`/auth/request` under uvicorn (and granian when installed) and nginx `return 204`.
`--quick` (`make bench-quick`) uses a 100,000-token large store and shorter runs.
`--smoke` (CI: tests/test_bench.py) runs every step on tiny sizes for a few seconds and
checks that every figure is produced; its timings mean nothing and are never asserted.
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
    output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def http_rows(http: dict[str, Any]) -> list[tuple[str, str, str]]:
    bare = http["bare_app"]
    names = {"bare_app": "bare ASGI app, uvicorn",
             "middleware": "same app behind TallykeyMiddleware",
             "auth_request": "/auth/request, tallykey serve (uvicorn)",
             "bare_app_granian": "bare ASGI app, granian",
             "auth_request_granian": "/auth/request, tallykey serve --server granian",
             "nginx_204": "nginx `return 204`",
             "middleware_baseline": "TallykeyMiddleware, --baseline tree",
             "auth_request_baseline": "/auth/request, --baseline tree"}
    targets = {"middleware": "≤ bare + 5 µs", "auth_request": "≤ 30 µs, ≥ 0.7× bare, "
               "p99 ≤ 1.5× bare"}
    rows = []
    for key, name in names.items():
        if key not in http:
            continue
        found = http[key]
        rows.append((f"{name}, -c{http['connections']}",
                     f"{found['cpu_us']} µs CPU, {found['rps']:,} req/s "
                     f"({found['rps'] / bare['rps']:.2f}×), p99 {found['p99_ms']} ms "
                     f"({found['p99_ms'] / bare['p99_ms']:.2f}×)", targets.get(key, "")))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="small sizes, short runs")
    sizes.add_argument("--smoke", action="store_true",
                       help="tiny sizes, seconds: checks every figure is produced (CI)")
    parser.add_argument("--baseline", help="another tree's src/ whose middleware and "
                        "/auth/request run alongside (before/after figures)")
    parser.add_argument("--output", type=Path, default=HERE / "results.json",
                        help="where the JSON results go")
    args = parser.parse_args()
    keys, large, seconds, rounds, hits, misses = (
        (50, 200, 1, 1, 200, 1) if args.smoke
        else (1000, 100_000, 2, 2, 50_000, 2) if args.quick
        else (1000, 1_000_000, 5, 3, 200_000, 5))
    results = {
        "verification": run_json([sys.executable, str(HERE / "verification.py"), "--small",
                                  str(keys), "--large", str(large), "--rounds", str(hits),
                                  "--miss-rounds", str(misses),
                                  "--cache-size", str(min(large, 100_000))]),
        # RSS per cached token with every token of the store cached, and the bound.
        "memory": run_json([sys.executable, str(HERE / "memory.py"), "--tokens",
                            str(500 if args.smoke else large)]),
        "peer": run_json([str(peer_python()), str(HERE / "peer_drf.py"), "--keys", str(keys),
                          "--rounds", str(min(hits, 5000))]),
        "http": run_json([sys.executable, str(HERE / "throughput.py"), "--seconds",
                          str(seconds), "--rounds", str(rounds),
                          *(["--baseline", args.baseline] if args.baseline else [])]),
        # limits.py's --rounds is its number of timed verify calls (not HTTP rounds).
        "limits": run_json([sys.executable, str(HERE / "limits.py"), "--rounds", str(hits),
                            "--seconds", str(seconds)]),
        # Many nodes on one PostgreSQL, directly and through PgBouncer (transaction mode).
        "cluster": run_json([sys.executable, str(HERE / "cluster.py"), *(
            ["--sizes", "1,2", "--revokes", "3", "--window", "2"] if args.smoke
            else ["--sizes", "1,4", "--revokes", "10"] if args.quick
            else ["--sizes", "1,4,16", "--revokes", "20"])]),
    }
    verification, peer, http = results["verification"], results["peer"], results["http"]
    hit = verification["hit"]["median_us"]
    floor = verification["floor"]["median_us"]
    miss = verification["miss"]
    results["ratios"] = {
        "hit_over_floor": round(hit / floor, 1),
        "peer_over_hit": round(peer["median_us"] / hit, 1),
        "large_miss_over_small_miss": round(miss["sqlite_large"]["median_us"]
                                            / miss["sqlite_small"]["median_us"], 2),
    }
    if "postgres_large" in miss:
        results["ratios"]["postgres_large_over_sqlite_large"] = round(
            miss["postgres_large"]["median_us"] / miss["sqlite_large"]["median_us"], 2)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    rows = [
        ("verify, cache hit (median)", f"{hit} µs ({results['ratios']['hit_over_floor']}× "
         f"the floor)", "≤ 3 µs"),
        ("floor: SHA-256 of the token + one dict lookup (median)", f"{floor} µs", ""),
        ("peer djangorestframework-api-key is_valid (median)",
         f"{peer['median_us']} µs ({results['ratios']['peer_over_hit']}× a hit)", "≥ 50×"),
    ]
    for store, label in (("sqlite_small", f"SQLite, {keys:,}"),
                         ("sqlite_large", f"SQLite, {large:,}"),
                         ("postgres_small", f"PostgreSQL, {keys:,}"),
                         ("postgres_large", f"PostgreSQL, {large:,}")):
        if store in miss:
            target = {"sqlite_small": "≤ 100 µs", "sqlite_large": "≤ 2× the 1k miss",
                      "postgres_large": "≤ 150 µs, ≤ 3× SQLite"}.get(store, "")
            rows.append((f"verify, cache miss, {label} tokens (median)",
                         f"{miss[store]['median_us']} µs (p99 {miss[store]['p99_us']})",
                         target))
    rows += http_rows(http)
    rows.append(("RSS with the cache full", f"{verification['memory']['rss_mb_cache_full']} "
                 f"MB ({verification['memory']['cache_entries']:,} entries)", "< 300 MB"))
    memory = results["memory"]
    rows.append((f"RSS per cached token, {memory['tokens']:,} tokens cached",
                 f"{memory['full']['bytes_per_token']:,} B "
                 f"({memory['full']['rss_mb_full']} MB in all)", ""))
    rows.append(("cache bound (TALLYKEY_CACHE_MAX_TOKENS) at a tenth of the tokens",
                 f"{memory['bounded']['cache_entries']:,} entries held, "
                 f"{memory['bounded']['evictions']:,} evicted", "≤ the bound"))
    limits = results["limits"]
    plain = limits["verify_hit"]["plain"]["median_us"]
    for name, measured in limits["verify_hit"].items():
        if name != "plain":
            rows.append((f"verify, cache hit, {name.replace('_', ' ')} (median)",
                         f"{measured['median_us']} µs (+{round(measured['median_us'] - plain, 2)}"
                         " µs over no controls)", ""))
    for name, measured in limits["auth_request"].items():
        rows.append((f"/auth/request, token with {name.replace('_', ' ')}",
                     f"{measured['rps']:,} req/s, p99 {measured['p99_ms']} ms", ""))
    for mode, label in (("direct", "PostgreSQL"), ("pgbouncer", "PgBouncer")):
        for size in results["cluster"][mode]:
            rows.append((f"{size['nodes']} nodes, {label}: revoke until acknowledged",
                         f"p50 {size['revoke_p50_ms']} ms, p99 {size['revoke_p99_ms']} ms; "
                         f"{size['pg_connections_most']} PG conns; "
                         f"{size['feed_reads_per_s']} feed reads/s; "
                         f"{size['rss_mb_per_node']} MB RSS/node", ""))
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  {'result':<70}  target")
    for name, value, target in rows:
        print(f"{name.ljust(width)}  {value:<70}  {target}")
    print(f"\nwritten: {args.output}")


if __name__ == "__main__":
    main()
