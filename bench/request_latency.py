"""Benchmark 1: how long ``POST /operator/tenants`` takes, against the old inline approach.

New: the operator API process (``python -m api_hooks``) commits the tenant and enqueues; a real
worker (concurrency 2) drains the queue meanwhile (healthy: also without one, the request
alone). Old: ``bench.inline_baseline`` writes to InfluxDB inside the request. Both are measured
with one ``requests.Session``, sequentially, under the same three InfluxDB conditions: healthy,
200 ms latency, blackholed (accepts, never answers).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import requests

from bench import config
from bench.config import Sizes
from bench.harness import Context, celery_worker, http_server, say
from bench.measure import Result, Timings, expect_status, time_requests, verdict

BENCHMARK = "1 · POST /operator/tenants latency"
TARGET_P99_SECONDS = 0.015
WORKER_CONCURRENCY = 2


@dataclass(frozen=True)
class Condition:
    """An InfluxDB condition (stand-in switches) and how many inline requests it can afford."""

    name: str
    switches: dict[str, object]
    inline_requests: Callable[[Sizes], int]
    why_fewer: str = ""


CONDITIONS = (
    Condition("healthy", {}, lambda sizes: sizes.latency_requests),
    Condition(
        "200 ms latency",
        {"latency": 0.2},
        lambda sizes: sizes.latency_inline_slow_requests,
        "a smoke run",
    ),
    Condition(
        "blackholed",
        {"hang": True},
        lambda sizes: sizes.latency_inline_blackholed_requests,
        "each waits out the 10 s timeout",
    ),
)


def run(ctx: Context, sizes: Sizes) -> list[Result]:
    results: list[Result] = []
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {config.OPERATOR_TOKEN}"
    with (
        http_server("api_hooks", ctx.workdir) as api_url,
        http_server("bench.inline_baseline", ctx.workdir) as baseline_url,
    ):
        for number, condition in enumerate(CONDITIONS):
            new = _measure_new(
                ctx, session, f"{api_url}/operator/tenants", number, condition, sizes
            )
            results.append(
                Result(
                    BENCHMARK,
                    f"{condition.name}: new (commit + enqueue)",
                    f"{len(new.seconds):,}",
                    new.summary(),
                    "p99 < 15 ms",
                    verdict(not new.unexpected and new.p(99) < TARGET_P99_SECONDS),
                )
            )
            if not condition.switches:  # healthy: the request alone, as well
                alone = _measure_new(
                    ctx, session, f"{api_url}/operator/tenants", 9, condition, sizes, worker=False
                )
                results.append(
                    Result(
                        BENCHMARK,
                        f"{condition.name}: new, no worker running (the request alone)",
                        f"{len(alone.seconds):,}",
                        alone.summary(),
                        "reference",
                        "n/a",
                    )
                )
            old, written = _measure_inline(
                ctx, session, f"{baseline_url}/baseline/tenants", number, condition, sizes
            )
            count = f"{len(old.seconds):,}"
            if len(old.seconds) < sizes.latency_requests:
                count += f" (not {sizes.latency_requests:,}: {condition.why_fewer})"
            results.append(
                Result(
                    BENCHMARK,
                    f"{condition.name}: old inline write (baseline)",
                    count,
                    f"{old.summary()} · written {written}/{len(old.seconds)}",
                    "baseline",
                    "n/a",
                )
            )
    return results


def _posts(
    session: requests.Session, url: str, prefix: str, count: int
) -> Iterator[Callable[[], requests.Response]]:
    for index in range(count):
        body = {"tenant_id": f"{prefix}-{index:05d}", "name": f"Bench tenant {prefix} {index}"}
        yield functools.partial(session.post, url, json=body, timeout=30)


def _measure_new(
    ctx: Context,
    session: requests.Session,
    url: str,
    number: int,
    condition: Condition,
    sizes: Sizes,
    *,
    worker: bool = True,
) -> Timings:
    """``worker``: a worker drains the queue meanwhile, sharing the machine's cores with the
    API (so the request pays for the provisioning it causes); without, the queue just grows."""
    ctx.fresh_state()
    draining = celery_worker(ctx.workdir, WORKER_CONCURRENCY) if worker else nullcontext()
    with draining:
        warmup = _posts(session, url, f"wn{number}", sizes.latency_warmup_requests)
        time_requests(warmup, expect_status(201))
        ctx.standin.switches(**condition.switches)
        say(f"new approach, {condition.name}: {sizes.latency_requests} requests")
        timings = time_requests(
            _posts(session, url, f"n{number}", sizes.latency_requests), expect_status(201)
        )
        # Release the worker's hanging requests before it is asked to stop.
        ctx.standin.switches(hang=False, latency=0)
        not_queued = ctx.count(
            "SELECT count(*) FROM tenants WHERE tenant_id LIKE %s AND influxdb_enqueued_at IS NULL",
            f"n{number}-%",
        )
        if not_queued:
            timings.unexpected.append(f"{not_queued} not queued")
    return timings


def _measure_inline(
    ctx: Context,
    session: requests.Session,
    url: str,
    number: int,
    condition: Condition,
    sizes: Sizes,
) -> tuple[Timings, int]:
    ctx.fresh_state()
    warmup = _posts(session, url, f"wi{number}", sizes.latency_warmup_requests)
    time_requests(warmup, expect_status(201))
    ctx.standin.switches(**condition.switches)
    count = condition.inline_requests(sizes)
    say(f"inline baseline, {condition.name}: {count} requests")
    written: list[bool] = []

    def created(response: requests.Response) -> str | None:
        if response.status_code != 201:
            return f"HTTP {response.status_code}"
        written.append(bool(response.json()["influxdb"]["initialized"]))
        return None

    timings = time_requests(_posts(session, url, f"i{number}", count), created)
    ctx.standin.switches(hang=False, latency=0)
    return timings, sum(written)
