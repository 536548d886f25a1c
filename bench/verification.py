"""In-process verification timings: cache hit, cache miss, and miss latency as the store
grows, plus resident memory with the cache full. Prints one JSON object."""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from store import build

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


def hit_and_miss(tokens: list[str], verifier: Verifier, rounds: int) -> dict[str, object]:
    header = f"Bearer {tokens[0]}"
    verifier.verify(header, IP)
    hit = timed(lambda: verifier.verify(header, IP, ("employees:read",)), rounds)
    misses: list[float] = []
    for token in random.sample(tokens, min(len(tokens), 2000)):
        verifier.cache.clear()
        misses += timed(lambda t=token: verifier.verify(f"Bearer {t}", IP), 1)
    return {"hit": summary(hit), "miss": summary(misses)}


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
    args = parser.parse_args()
    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings, tokens = build(Path(tmp) / "small", args.small, args.small)
        verifier = Verifier(settings=settings, background=False)
        result["store_1k"] = hit_and_miss(tokens, verifier, args.rounds)
        verifier.close()

        started = time.monotonic()
        settings, tokens = build(Path(tmp) / "large", args.large, args.cache_size)
        result["large_store_build_s"] = round(time.monotonic() - started, 1)
        verifier = Verifier(settings=settings, background=False, cache_size=args.cache_size)
        result["store_large"] = {"tokens": args.large,
                                 **hit_and_miss(tokens, verifier, args.rounds)}
        gc.collect()
        before = rss_mb()
        verifier.cache.clear()
        for token in tokens:
            verifier.verify(f"Bearer {token}", IP)
        verifier.usage.flush()
        gc.collect()
        result["memory"] = {"cache_entries": len(verifier.cache), "rss_mb_before_fill":
                            round(before, 1), "rss_mb_cache_full": round(rss_mb(), 1)}
        verifier.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
