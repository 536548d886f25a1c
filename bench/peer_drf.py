"""The peer: djangorestframework-api-key verifying keys the way it does in production
(a database lookup by prefix and a SHA-512 comparison on every request), in its own
virtualenv with its own SQLite storage. Run by bench/run.py; prints one JSON object."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp())
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                               "NAME": str(workdir / "peer.sqlite3")}},
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth",
                        "rest_framework", "rest_framework_api_key"],
        USE_TZ=True,
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from rest_framework_api_key.models import APIKey

    keys = [APIKey.objects.create_key(name=f"bench {n}")[1] for n in range(args.keys)]
    probe = keys[len(keys) // 2]
    assert APIKey.objects.is_valid(probe)
    samples = []
    clock = time.perf_counter_ns
    for _ in range(args.rounds):
        start = clock()
        APIKey.objects.is_valid(probe)
        samples.append((clock() - start) / 1000)
    ordered = sorted(samples)
    json.dump({"package": "djangorestframework-api-key", "keys": args.keys,
               "median_us": round(statistics.median(ordered), 2),
               "p99_us": round(ordered[int(len(ordered) * 0.99) - 1], 2),
               "n": len(ordered)}, sys.stdout)


if __name__ == "__main__":
    main()
