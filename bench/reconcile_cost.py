"""Benchmark 3: the cost of one reconcile run at 1k, 10k and 100k provisioned tenants.

Tenants are inserted with ``generate_series`` as ``provisioned`` (an hour ago); their databases
are created in an in-process stand-in through its Python API (``StandIn.create_database``, no
HTTP), so nothing is owed and a run is pure scanning: the steady state of a healthy fleet. The
run is ``worker.reconcile.reconcile`` itself, with the settings' batch size and a publish
function that only counts (it must stay at zero).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench import config
from bench.config import Sizes
from bench.harness import Context, say
from bench.measure import Result, median, verdict
from influxdb3_standin import StandIn
from worker.db import get_engine
from worker.node_config import NodeConfig
from worker.nodes import NodePool
from worker.queues import Job
from worker.reconcile import ReconcileSummary, reconcile
from worker.settings import get_settings

BENCHMARK = "3 · reconcile cost"
TARGET_SECONDS_AT_100K = 5.0
TARGET_CALLS = 1  # one list of databases per InfluxDB server

_INSERT_PROVISIONED = """
INSERT INTO tenants (tenant_id, name, status, influxdb_state, influxdb_attempts, influxdb_node,
                     influxdb_enqueued_at, influxdb_provisioned_at, influxdb_updated_at)
SELECT format('rc-%%s', lpad(g::text, 6, '0')), format('Reconcile tenant %%s', g), 'active',
       'provisioned', 1, 'bench', now() - interval '1 hour', now() - interval '1 hour',
       now() - interval '1 hour'
FROM generate_series(%s::int, %s::int) AS g
"""


def run(ctx: Context, sizes: Sizes) -> list[Result]:
    ctx.fresh_state()
    results: list[Result] = []
    standin = StandIn(token=config.INFLUXDB_TOKEN, database_limit=max(sizes.reconcile_tenants))
    standin.start()
    node = NodeConfig("bench", standin.url, config.INFLUXDB_TOKEN, max(sizes.reconcile_tenants))
    settings = get_settings().model_copy(update={"influxdb_nodes": (node,)})
    pool = NodePool(settings)
    published: list[str] = []

    def publish(tenant_id: str, job: Job, task_id: str | None = None) -> bool:
        published.append(tenant_id)
        return True

    try:
        seeded = 0
        for size in sorted(sizes.reconcile_tenants):
            _seed(ctx, standin, settings.database_name, seeded + 1, size)
            seeded = size
            runs: list[tuple[float, ReconcileSummary, int]] = []
            for _ in range(sizes.reconcile_runs):
                requests_before = standin.request_count()
                started = time.perf_counter()
                summary = reconcile(get_engine(), pool, settings, publish)
                wall = time.perf_counter() - started
                runs.append((wall, summary, standin.request_count() - requests_before))
            results.append(_result(size, runs, len(published)))
    finally:
        standin.stop()
    return results


def _seed(
    ctx: Context, standin: StandIn, database_name: Callable[[str], str], first: int, last: int
) -> None:
    started = time.perf_counter()
    ctx.insert_placed(_INSERT_PROVISIONED, (first, last))
    inserted = time.perf_counter()
    for number in range(first, last + 1):
        standin.create_database(database_name(f"rc-{number:06d}"))
    say(
        f"seeded tenants {first:,}..{last:,}: Postgres {inserted - started:.1f} s, "
        f"stand-in databases {time.perf_counter() - inserted:.1f} s"
    )


def _result(size: int, runs: list[tuple[float, ReconcileSummary, int]], published: int) -> Result:
    walls = [wall for wall, _, _ in runs]
    summary_calls = sorted({summary.influxdb_calls for _, summary, _ in runs})
    seen_calls = sorted({calls for _, _, calls in runs})
    scanned = sorted({summary.scanned for _, summary, _ in runs})
    problems = [
        summary.influxdb_error or f"requeued {summary.requeued}, drift {summary.drift}"
        for _, summary, _ in runs
        if summary.influxdb_error or summary.requeued or summary.drift or not summary.ran
    ]
    wall = median(walls)
    text = (
        f"{wall:.2f} s (median of {len(runs)}, max {max(walls):.2f} s) · InfluxDB calls: "
        f"summary {_listed(summary_calls)}, stand-in saw {_listed(seen_calls)} · "
        f"scanned {_listed(scanned)}"
    )
    if problems or published:
        text += f" · unexpected: {problems[:1]} published {published}"
    calls_ok = summary_calls == [TARGET_CALLS] and seen_calls == [TARGET_CALLS]
    met = calls_ok and not problems and not published and scanned == [size]
    target = f"InfluxDB calls = {TARGET_CALLS}"
    if size >= 100_000:
        target = f"< {TARGET_SECONDS_AT_100K:g} s, " + target
        met = met and wall < TARGET_SECONDS_AT_100K
    say(f"reconcile at {size:,}: {text}")
    return Result(
        BENCHMARK, f"{size:,} provisioned tenants", f"{size:,}", text, target, verdict(met)
    )


def _listed(values: list[int]) -> str:
    return "/".join(f"{value:,}" for value in values)
