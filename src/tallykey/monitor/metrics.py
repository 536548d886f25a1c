"""Prometheus metrics, served at `/metrics`.

The verification hot path pays almost nothing for them: verifiers count in plain
attributes and publish the differences to these metrics once a second (with the usage
flush); latency is timed for one verification in `LATENCY_SAMPLE_EVERY` only. What the
database knows (the outbox backlog) is read at scrape time; the cache hit ratio is
derived at scrape time from the hit and miss counters.

With `tallykey serve --workers N` (N > 1) the workers are separate processes behind one
port, so scraping "one worker" is not possible: the server then runs prometheus-client's
multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, a fresh temporary directory unless set),
and any worker's `/metrics` answers for all of them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tallykey.asgi import direct
from tallykey.db.engine import Database
from tallykey.errors import StoreUnavailable
from tallykey.notify.models import PENDING, SENDING, OutboxMessage

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Time one verification in this many (a power of two: the check is a bit mask).
LATENCY_SAMPLE_EVERY = 64

#: This process's metrics (in multiprocess mode their values live in shared files).
REGISTRY = CollectorRegistry(auto_describe=True)

VERIFICATIONS = Counter(
    "tallykey_verifications", "Verifications by outcome: allowed, or the refusal's reason "
    "(revoked, expired, unknown, …).", ["outcome"], registry=REGISTRY)
LATENCY = Histogram(
    "tallykey_verification_seconds",
    f"Time to verify one request in-process (sampled: 1 in {LATENCY_SAMPLE_EVERY}).",
    buckets=(1e-6, 2e-6, 3e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3,
             0.025, 0.1), registry=REGISTRY)
CACHE_HITS = Counter("tallykey_verification_cache_hits",
                     "Verifications answered from the in-process cache.", registry=REGISTRY)
CACHE_MISSES = Counter("tallykey_verification_cache_misses",
                       "Token records loaded from the store (cache misses).",
                       registry=REGISTRY)
CACHE_EVICTIONS = Counter(
    "tallykey_verification_cache_evictions",
    "Cached tokens evicted to stay within TALLYKEY_CACHE_MAX_TOKENS (each one's next "
    "request is a miss).", registry=REGISTRY)
DECOY_TRIPS = Counter(
    "tallykey_decoy_trips", "Requests that presented a decoy token (SPEC §17); they are "
    "in no other verification metric.", registry=REGISTRY)
PROPAGATION_LAG = Histogram(
    "tallykey_propagation_lag_seconds",
    "From a verdict-affecting change (its verdict_changes.at) to this node applying it.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY)


PROPAGATION_INCOMPLETE = Counter(
    "tallykey_propagation_incomplete",
    "Verdict-affecting changes answered before every live node confirmed them "
    "(TALLYKEY_PROPAGATION_TIMEOUT ran out).", registry=REGISTRY)
RESPONSES = Counter("tallykey_http_responses",
                    "HTTP answers by status class (2xx, 3xx, 4xx, 5xx).", ["code"],
                    registry=REGISTRY)
_CODE_CLASSES = {digit: f"{digit}xx" for digit in range(1, 6)}
_monotonic = time.monotonic


class ResponseCounter:
    """Counts every HTTP answer by status class (`tallykey_http_responses_total`): in
    plain integers, published to the metric at most once a second and at each scrape,
    like the verifiers' counts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._app = direct(app)
        self.counters = {code: RESPONSES.labels(code) for code in _CODE_CLASSES.values()}
        self.counts = dict.fromkeys(self.counters, 0)
        self.published = dict.fromkeys(self.counters, 0)
        self.published_at = time.monotonic()

    def publish(self) -> None:
        self.published_at = time.monotonic()
        for code, count in list(self.counts.items()):
            if count != self.published[code]:
                self.counters[code].inc(count - self.published[code])
                self.published[code] = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # a coroutine function itself: servers tell ASGI 3 apps by it
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        counts = self.counts

        def counted(message: Message) -> Awaitable[None]:
            """Not a coroutine itself: it hands back the wrapped `send`'s awaitable, so
            each message costs one plain call, not one more coroutine frame (and a
            closure costs less than an object per request)."""
            if message["type"] == "http.response.start":  # count it by status class
                code = _CODE_CLASSES.get(int(message["status"]) // 100)
                if code:
                    counts[code] += 1
                if _monotonic() - self.published_at >= 1.0:
                    self.publish()
            return send(message)

        await self._app(scope, receive, counted)


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROCESS_ENV))


def prepare_multiprocess(workers: int) -> str | None:
    """Before starting `workers` worker processes: with more than one, point every worker
    at one empty metrics directory (created unless `PROMETHEUS_MULTIPROC_DIR` is set)."""
    if workers <= 1:
        return None
    directory = os.environ.get(MULTIPROCESS_ENV)
    if directory:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # left by a previous run: counters restart at 0
            stale.unlink()
    else:
        directory = tempfile.mkdtemp(prefix="tallykey-metrics-")
        os.environ[MULTIPROCESS_ENV] = directory
    return directory


def remove_multiprocess_dir(directory: str | None) -> None:
    if directory and Path(directory).name.startswith("tallykey-metrics-"):
        shutil.rmtree(directory, ignore_errors=True)


class _Families:
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _total(families: list[Metric], name: str) -> float:
    return sum(sample.value for family in families if family.name == name
               for sample in family.samples if sample.name == f"{name}_total")


def exposition(database: Database, clock_offset: float | None = None) -> bytes:
    """The text format answer of `/metrics`. With the store unreachable it still answers,
    with `tallykey_store_up 0` (and no outbox backlog)."""
    if multiprocess():
        collector = MultiProcessCollector(None)  # type: ignore[no-untyped-call]
        families = list(collector.collect())  # type: ignore[no-untyped-call]
    else:
        families = list(REGISTRY.collect())
    hits = _total(families, "tallykey_verification_cache_hits")
    misses = _total(families, "tallykey_verification_cache_misses")
    ratio = GaugeMetricFamily(
        "tallykey_verification_cache_hit_ratio",
        "Share of cache lookups answered from the cache since start (NaN before any).",
        value=hits / (hits + misses) if hits + misses else float("nan"))
    backlog = GaugeMetricFamily("tallykey_outbox_backlog",
                                "Outbox messages not delivered yet, by status.",
                                labels=["status"])
    up = 1.0
    try:
        with database.reading() as session:
            rows = session.execute(
                select(OutboxMessage.status, func.count()).where(
                    OutboxMessage.status.in_((PENDING, SENDING))).group_by(
                    OutboxMessage.status))
            counts = {str(status): int(count) for status, count in rows}
        for status in (PENDING, SENDING):
            backlog.add_metric([status], float(counts.get(status, 0)))
    except StoreUnavailable:
        up = 0.0
    extra = [ratio, backlog, GaugeMetricFamily(
        "tallykey_store_up", "1 when this node reached the store for this scrape, else 0.",
        value=up)]
    if clock_offset is not None:
        extra.append(GaugeMetricFamily(
            "tallykey_clock_offset_seconds",
            "The database's clock minus this node's, as last measured.", value=clock_offset))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([*families, *extra]))
    return generate_latest(registry)
