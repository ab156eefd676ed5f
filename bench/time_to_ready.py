"""Benchmark: time to ready, one tenant at a time on an idle system (issue 23).

From ``create_tenant`` returning to the tenant's row reading ``provisioned``, for tenants
created one after another (each waits for the last), a prefork-4 worker already running, the
stand-in answering after 0 ms and after 20 ms. The end is seen by a ``LISTEN`` on the event
log's channel (migration 0012: notified at the commit that made the tenant provisioned), then
one read of the row: no polling interval is added.

The floor, measured in the same run: the job's two InfluxDB calls (create the database, write
the ``_init`` marker) back to back from this process through the same client the worker uses.
What lies above it is ours: Celery's dispatch, the run's SQL and commits, the event.

Where it goes, on the database's clock (medians): *to the start* from the tenant's insert to
its attempt's start (the create's commit and publish, Celery's dispatch, the run's connection,
lock and read), *the attempt* from its start to its finish (the start's statement and commit,
both InfluxDB calls), *the finish* from there to the row read ``provisioned`` here (the
finish's statement and commit, the notification, the read).
"""

from __future__ import annotations

import time

import psycopg

from api_hooks import create_tenant
from bench.config import Sizes
from bench.harness import Context, celery_worker, say
from bench.measure import Result, percentile, verdict
from worker.nodes import shared_pool
from worker.states import AttemptOutcome

BENCHMARK = "time to ready · one tenant at a time"
TARGET_ABOVE_FLOOR_MS = 3.0


def run(ctx: Context, sizes: Sizes) -> list[Result]:
    results = []
    ctx.fresh_state()
    with celery_worker(ctx.workdir, 4):
        for latency in (0.0, 0.020):
            ctx.standin.switches(latency=latency)
            try:
                results.append(_one_latency(ctx, sizes.ready_tenants, latency))
            finally:
                ctx.standin.switches(latency=0)
    return results


def _one_latency(ctx: Context, count: int, latency: float) -> Result:
    label = f"{latency * 1000:.0f}"
    floor = _floor(count, label)
    waits: list[float] = []
    seen: dict[str, object] = {}  # tenant: the database's time when it was read provisioned
    with psycopg.connect(ctx.db.info.dsn, autocommit=True) as listener:
        listener.execute("LISTEN tenant_events")
        for index in range(-5, count):  # five to warm the worker's pool up, not counted
            tenant_id = f"ready{label}-{index + 5:05d}"
            create_tenant(tenant_id, "Ready tenant")
            created = time.monotonic()
            at = _wait_provisioned(listener, tenant_id)
            if index >= 0:
                waits.append(time.monotonic() - created)
                seen[tenant_id] = at
    p50, p90 = percentile(waits, 50) * 1000, percentile(waits, 90) * 1000
    floor_p50 = percentile(floor, 50) * 1000
    result = (
        f"p50 {p50:.1f} ms, p90 {p90:.1f} ms · floor (the two InfluxDB calls back to back) "
        f"p50 {floor_p50:.1f} ms · ours {p50 - floor_p50:.1f} ms · {_where(ctx, seen)}"
    )
    say(f"time to ready at {label} ms: {result}")
    return Result(
        BENCHMARK,
        f"time to ready, InfluxDB latency {label} ms, prefork 4, idle",
        f"{count:,}",
        result,
        f"p50 ≤ floor + {TARGET_ABOVE_FLOOR_MS:.0f} ms",
        verdict(p50 <= floor_p50 + TARGET_ABOVE_FLOOR_MS),
    )


def _where(ctx: Context, seen: dict[str, object]) -> str:
    """Medians of the three parts of a tenant's wait (the module docstring), in ms."""
    parts = ctx.db.execute(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY a.started_at - t.created_at), "
        "percentile_cont(0.5) WITHIN GROUP (ORDER BY a.finished_at - a.started_at), "
        "percentile_cont(0.5) WITHIN GROUP (ORDER BY s.seen - a.finished_at) "
        "FROM tenants t JOIN provisioning_attempts a USING (tenant_id) "
        "JOIN unnest(%s::text[], %s::timestamptz[]) AS s (tenant_id, seen) USING (tenant_id) "
        "WHERE a.outcome = %s",  # the attempt that made it ready, not a retried one before it
        (list(seen), list(seen.values()), AttemptOutcome.PROVISIONED.value),
    ).fetchone()
    assert parts is not None and None not in parts, "no attempt recorded"
    start, attempt, finish = (part.total_seconds() * 1000 for part in parts)
    return f"to the start {start:.1f} ms, the attempt {attempt:.1f} ms, the finish {finish:.1f} ms"


def _wait_provisioned(listener: psycopg.Connection[tuple[object, ...]], tenant_id: str) -> object:
    """Wait until ``tenant_id`` reads provisioned; the database's time of that read."""
    deadline = time.monotonic() + 30
    query = "SELECT influxdb_state, clock_timestamp() FROM tenants WHERE tenant_id = %s"
    while time.monotonic() < deadline:
        row = listener.execute(query, (tenant_id,)).fetchone()
        if row and row[0] == "provisioned":
            return row[1]
        if row and row[0] == "failed":
            raise RuntimeError(f"{tenant_id} failed")
        for _ in listener.notifies(timeout=1.0, stop_after=1):
            pass
    raise TimeoutError(f"{tenant_id} was not provisioned within 30 s")


def _floor(count: int, label: str) -> list[float]:
    pool = shared_pool()
    client = pool.client(pool.nodes()[0])  # the worker's client, as the worker builds it
    timings = []
    for index in range(count):
        database = f"floor{label}_{index:05d}"
        started = time.monotonic()
        client.ensure_database(database, None)
        client.write_marker(database, f"floor-{index}", "00000000-0000-0000-0000-000000000000", 0)
        timings.append(time.monotonic() - started)
        client.delete_database(database)
    return timings
