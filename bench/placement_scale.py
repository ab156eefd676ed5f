"""Benchmark 10: placement cost against the fleet's size, and eight placers at once.

1,000 servers (configured, never called: placement is Postgres only), each with room for far
more than is placed. For each fleet size (1,000, 100,000 and 1,000,000 placed tenants, inserted
with ``generate_series`` round robin over the servers, the slot counts filled with one
``INSERT ... GROUP BY`` as migration 0007 does, the count trigger off during the bulk insert
only), 500 new tenants are placed one after another with ``worker.placement.place_tenant`` on one
connection; each placement is timed. The query placement ran before the counts (a ``GROUP BY``
over every placed tenant) is timed alone for comparison. Then, at the largest size, 8 processes
place 250 tenants each at once; every server's real count must stay within its limit, and
throughput is compared with one process placing 2,000. Last, at that size, a provisioning run's
own way in: 500 starts of an attempt placed in one statement
(``worker.placement.start_on_free_node``), with a nodes file naming all 1,000 servers and then
10 of them (the file is a parameter of every start: its cost must not grow with the fleet).
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ProcessPoolExecutor

from bench.config import Sizes
from bench.harness import Context, say
from bench.measure import Result, Timings, cpu_busy_since, cpu_ticks, fmt_seconds, verdict
from worker import store
from worker.db import get_engine
from worker.node_config import NodeConfig
from worker.placement import place_tenant, start_on_free_node, sync_nodes

BENCHMARK = "10 · placement"
SERVERS = 1000
NODES = tuple(NodeConfig(f"s{i:04d}", f"http://s{i}", None, 100_000) for i in range(SERVERS))
OLD_QUERY = "SELECT influxdb_node, count(*) FROM tenants WHERE influxdb_node IS NOT NULL GROUP BY 1"
PLACERS = 8
WARMUP = 5


def run(ctx: Context, sizes: Sizes) -> list[Result]:
    results: list[Result] = []
    p50s: dict[int, float] = {}
    for fleet in sizes.placement_fleets:
        _fill(ctx, fleet)
        timings = Timings()
        warmup = _new_tenants(ctx, "warm", WARMUP)
        ids = _new_tenants(ctx, "one", sizes.placement_requests)
        with get_engine().connect() as conn:
            for tenant_id in warmup:  # the first writes the nodes file down (once per process)
                place_tenant(conn, tenant_id, NODES, exclude=set())
            cpu_before = cpu_ticks()
            for tenant_id in ids:
                started = time.perf_counter()
                chosen = place_tenant(conn, tenant_id, NODES, exclude=set())
                timings.seconds.append(time.perf_counter() - started)
                if chosen is None:
                    timings.unexpected.append("not placed")
            timings.cpu_busy = cpu_busy_since(cpu_before)
        old = []
        for _ in range(3):
            started = time.perf_counter()
            ctx.db.execute(OLD_QUERY).fetchall()
            old.append(time.perf_counter() - started)
        p50s[fleet] = timings.p(50)
        say(f"placement at {fleet:,}: {timings.summary()}")
        results.append(
            Result(
                BENCHMARK,
                f"{fleet:,} placed tenants, {SERVERS:,} servers",
                f"{len(timings.seconds):,}",
                f"{timings.summary()} · the GROUP BY it replaced: "
                f"{fmt_seconds(statistics.median(old))} alone",
                "p50 flat with size"
                if fleet != max(sizes.placement_fleets)
                else f"p50 ≤ 1.5 x {p50s[min(p50s)] * 1000:.2f} ms (at {min(p50s):,})",
                "n/a"
                if fleet != max(sizes.placement_fleets)
                else verdict(not timings.unexpected and timings.p(50) <= 1.5 * p50s[min(p50s)]),
            )
        )
    results.append(_starts(ctx, sizes))
    results.append(_concurrent(ctx, sizes))
    return results


def _starts(ctx: Context, sizes: Sizes) -> Result:
    """One-statement starts with the file naming every server, then ten of them."""
    series: dict[int, Timings] = {}
    for count in (SERVERS, 10):
        ids = _new_tenants(ctx, f"start{count}", WARMUP + sizes.placement_requests)
        timings = series[count] = Timings()
        with get_engine().connect() as conn:
            cpu_before = cpu_ticks()
            for n, tenant_id in enumerate(ids):
                start = store.update_statement(tenant_id, influxdb_attempts=1)
                started = time.perf_counter()
                chosen = start_on_free_node(conn, start, NODES[:count])
                conn.commit()
                if n >= WARMUP:
                    timings.seconds.append(time.perf_counter() - started)
                if chosen is None:
                    timings.unexpected.append("not started")
            timings.cpu_busy = cpu_busy_since(cpu_before)
        say(f"starts, file of {count:,} servers: {timings.summary()}")
    many, few = series[SERVERS], series[10]
    return Result(
        BENCHMARK,
        f"a run's one-statement start, file of {SERVERS:,} servers vs 10 (fleet "
        f"{max(sizes.placement_fleets):,})",
        f"{len(many.seconds):,}",
        f"{many.summary()} · with 10 servers: p50 {fmt_seconds(few.p(50))}",
        "p50 ≤ 4 x the 10-server p50",
        verdict(not many.unexpected + few.unexpected and many.p(50) <= 4 * few.p(50)),
    )


def _fill(ctx: Context, fleet: int) -> None:
    ctx.fresh_state()
    say(f"placement: {fleet:,} placed tenants over {SERVERS} servers")
    ctx.insert_placed(
        "INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_node) "
        "SELECT 'f-' || i, 'Fleet tenant', 'provisioned', 's' || lpad((i %% %s)::text, 4, '0') "
        "FROM generate_series(1, %s) AS i",
        (SERVERS, fleet),
    )


def _new_tenants(ctx: Context, prefix: str, count: int) -> list[str]:
    ids = [f"{prefix}-{i:05d}" for i in range(count)]
    ctx.db.execute(
        "INSERT INTO tenants (tenant_id, name) SELECT id, 'New' FROM unnest(%s::text[]) AS id",
        (ids,),
    )
    return ids


def _ready() -> None:
    """Each placer process, before the clock: its connection open, the nodes written down."""
    with get_engine().connect() as conn:
        sync_nodes(conn, NODES)


def _place_all(ids: list[str]) -> tuple[float, int]:
    """In a process of its own: place every tenant of ``ids``; (seconds, placed)."""
    started = time.perf_counter()
    placed = 0
    with get_engine().connect() as conn:
        for tenant_id in ids:
            placed += place_tenant(conn, tenant_id, NODES, exclude=set()) is not None
    return time.perf_counter() - started, placed


def _concurrent(ctx: Context, sizes: Sizes) -> Result:
    per_placer = sizes.placement_concurrent_per_placer
    alone = _new_tenants(ctx, "alone", per_placer * PLACERS)
    with ProcessPoolExecutor(max_workers=1, initializer=_ready) as one:
        seconds_one, placed_one = one.submit(_place_all, alone).result()
    together = _new_tenants(ctx, "together", per_placer * PLACERS)
    batches = [together[i::PLACERS] for i in range(PLACERS)]
    with ProcessPoolExecutor(max_workers=PLACERS, initializer=_ready) as many:
        list(many.map(time.sleep, [0.5] * PLACERS))  # every process started before the clock
        started = time.perf_counter()
        outcomes = list(many.map(_place_all, batches))
        seconds_many = time.perf_counter() - started
    placed_many = sum(placed for _, placed in outcomes)
    over = ctx.count(
        "SELECT count(*) FROM (SELECT influxdb_node FROM tenants WHERE influxdb_node IS NOT NULL "
        "GROUP BY 1 HAVING count(*) > %s) AS over",
        NODES[0].database_limit,
    )
    drift = ctx.count(
        "SELECT count(*) FROM influxdb_nodes n WHERE placed <> (SELECT count(*) FROM tenants t "
        "WHERE t.influxdb_node = n.name)"
    )
    rate_one = placed_one / seconds_one
    rate_many = placed_many / seconds_many
    ratio = rate_many / rate_one
    return Result(
        BENCHMARK,
        f"{PLACERS} placers at once (processes), {SERVERS:,} servers",
        f"{placed_many:,}",
        f"{rate_many:.0f} placements/s vs {rate_one:.0f}/s for one placer ({ratio:.2f}x) · "
        f"servers over their limit: {over} · counts differing from the real ones: {drift}",
        "≥ 1.5x one placer's throughput, none over its limit",
        verdict(ratio >= 1.5 and over == 0 and drift == 0 and placed_many == len(together)),
    )
