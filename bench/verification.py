"""In-process verification timings: cache hit (and its floor: SHA-256 and one dict
lookup), cache misses on SQLite and PostgreSQL at a small and a large store size, plus
resident memory with the cache full. Misses are taken in interleaved rounds across the
stores, so a noisy neighbour slows every store alike. Prints one JSON object."""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contextlib import ExitStack

import psycopg
from store import build, build_postgres

from tallykey.auth.verifier import Verifier

IP = "127.0.0.1"


def timed(call: object, rounds: int) -> list[float]:
    samples = []
    clock = time.perf_counter_ns
    for _ in range(rounds):
        start = clock()
        call()  # type: ignore[operator]
        samples.append((clock() - start) / 1000)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_us": round(statistics.median(ordered), 2),
            "p99_us": round(ordered[int(len(ordered) * 0.99) - 1], 2),
            "mean_us": round(statistics.fmean(ordered), 2), "n": len(ordered)}


def hits(tokens: list[str], verifier: Verifier, rounds: int) -> dict[str, float]:
    header = f"Bearer {tokens[0]}"
    verifier.verify(header, IP)
    return summary(timed(lambda: verifier.verify(header, IP, ("employees:read",)), rounds))


def floor(tokens: list[str], rounds: int) -> dict[str, float]:
    """What no verifier can beat: SHA-256 of the token and one dict lookup."""
    table = {hashlib.sha256(t.encode()).digest(): t for t in tokens}
    token, sha256 = tokens[0], hashlib.sha256
    return summary(timed(lambda: table.get(sha256(token.encode()).digest()), rounds))


def miss_rounds(stores: dict[str, tuple[list[str], Verifier]], per_round: int,
                rounds: int) -> dict[str, dict[str, float]]:
    """Misses (cache cleared before each) taken store after store, round after round."""
    samples: dict[str, list[float]] = {name: [] for name in stores}
    for _ in range(rounds):
        for name, (tokens, verifier) in stores.items():
            for token in random.sample(tokens, min(len(tokens), per_round)):
                verifier.cache.clear()
                samples[name] += timed(lambda t=token, v=verifier: v.verify(f"Bearer {t}", IP), 1)
    return {name: summary(found) for name, found in samples.items()}


def postgres_reachable(url: str) -> bool:
    try:
        psycopg.connect(url.replace("+psycopg", ""), connect_timeout=2).close()
    except psycopg.Error:
        return False
    return True


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--cache-size", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=200_000)
    parser.add_argument("--miss-rounds", type=int, default=5)
    parser.add_argument("--postgres", default=os.environ.get(
        "TALLYKEY_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL server to build the PostgreSQL stores on ('' to skip)")
    args = parser.parse_args()
    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        stores: dict[str, tuple[list[str], Verifier]] = {}

        def add(name: str, settings_and_tokens: tuple[object, list[str]],
                cache_size: int = 100_000) -> Verifier:
            settings, tokens = settings_and_tokens
            verifier = Verifier(settings=settings, background=False,  # type: ignore[arg-type]
                                cache_size=cache_size)
            stack.callback(verifier.close)
            stores[name] = (tokens, verifier)
            return verifier

        started = time.monotonic()
        add("sqlite_small", build(Path(tmp) / "small", args.small, args.small))
        large = add("sqlite_large", build(Path(tmp) / "large", args.large, args.cache_size),
                    args.cache_size)
        result["sqlite_build_s"] = round(time.monotonic() - started, 1)
        gc.collect()  # memory first, before the PostgreSQL stores share the process
        before = rss_mb()
        for token in stores["sqlite_large"][0]:
            large.verify(f"Bearer {token}", IP)
        large.usage.flush()
        gc.collect()
        result["memory"] = {"cache_entries": len(large.cache), "rss_mb_before_fill":
                            round(before, 1), "rss_mb_cache_full": round(rss_mb(), 1)}
        large.cache.clear()
        if args.postgres and postgres_reachable(args.postgres):
            started = time.monotonic()
            add("postgres_small", stack.enter_context(build_postgres(
                args.postgres, Path(tmp) / "pg_small", args.small, args.small)))
            add("postgres_large", stack.enter_context(build_postgres(
                args.postgres, Path(tmp) / "pg_large", args.large, 2000)))
            result["postgres_build_s"] = round(time.monotonic() - started, 1)
        tokens, verifier = stores["sqlite_small"]
        result["hit"] = hits(tokens, verifier, args.rounds)
        result["floor"] = floor(tokens, args.rounds)
        result["stores"] = {"small": args.small, "large": args.large}
        result["miss"] = miss_rounds(stores, 400, args.miss_rounds)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
