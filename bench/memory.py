"""Memory of the verification cache: resident bytes per cached token with the cache
holding every token of a store (`--tokens`, 1,000,000 in `make bench`), then the bound
(TALLYKEY_CACHE_MAX_TOKENS) at work: the same tokens (at most 200,000) loaded into a
cache bounded at a tenth of them, which stays within its bound by evicting. Entries
are loaded the way a miss loads them (`Verifier._load`: the store's record, then the
cache), so the figure is the cache's alone (no usage counts pending). Prints one JSON object."""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from store import build

from tallykey.auth.verifier import Verifier
from tallykey.settings import Settings
from tallykey.tokens.format import token_digest


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def fill(verifier: Verifier, keys: list[bytes]) -> float:
    """Load every key as a miss would; seconds taken."""
    started = time.monotonic()
    for key in keys:
        verifier._load(key)
    return time.monotonic() - started


def build_store(data_dir: Path, tokens: int, into: Path) -> None:
    """In a child process, so the memory the build used is not reused by the cache."""
    settings, made = build(data_dir, tokens, tokens)
    into.write_text(json.dumps({"settings": settings.model_dump(mode="json"),
                                "tokens": made}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=1_000_000)
    args = parser.parse_args()
    result: dict[str, object] = {"tokens": args.tokens}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        built = Path(tmp) / "built.json"
        child = multiprocessing.get_context("spawn").Process(
            target=build_store, args=(Path(tmp) / "memory", args.tokens, built))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"building the store failed ({child.exitcode})")
        stored = json.loads(built.read_text())
        settings = Settings.model_validate(stored["settings"])
        keys = [token_digest(token) for token in stored["tokens"]]
        del stored
        result["build_s"] = round(time.monotonic() - started, 1)
        verifier = Verifier(settings=settings, background=False, cache_size=args.tokens)
        try:
            verifier._load(keys[0])  # the lookup connection and the shared values
            verifier.cache.clear()
            gc.collect()
            before = rss_bytes()
            seconds = fill(verifier, keys)
            gc.collect()
            after = rss_bytes()
            entries = len(verifier.cache)
            result["full"] = {
                "cache_entries": entries, "rss_mb_before": round(before / 2**20, 1),
                "rss_mb_full": round(after / 2**20, 1),
                "bytes_per_token": round((after - before) / max(entries, 1)),
                "load_us_per_token": round(seconds / args.tokens * 1e6, 1)}
            verifier.cache.clear()
        finally:
            verifier.close()
        churn = keys[:200_000]  # enough to show the bound at work
        bound = max(1, len(churn) // 10)
        verifier = Verifier(settings=settings, background=False, cache_size=bound)
        try:
            fill(verifier, churn)
            result["bounded"] = {"bound": bound, "cache_entries": len(verifier.cache),
                                 "evictions": verifier.cache.evictions,
                                 "within_bound": len(verifier.cache) <= bound}
        finally:
            verifier.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
