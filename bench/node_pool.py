"""Benchmark 6: outgrowing one server - 10,000 tenants over 100 nodes of limit 100.

Three measurements on the same pool of in-process stand-ins (one HTTP server each, all in the
benchmark's process) listed in a nodes file:

- placement: ``worker.placement.place_tenant`` alone for every tenant, one after another on one
  connection (the advisory lock serialises placements anyway): placements per second, and the
  spread of tenants over nodes (least used first must give exactly 100 each);
- provisioning: the same tenants (placement cleared) queued, then a worker (concurrency 8) that
  reads the nodes file places and provisions them all: wall time from the first attempt to the
  last ``provisioned``, and no node ever answering 422 (create calls = databases created);
- reconcile: one ``worker.reconcile.reconcile`` run over them: wall time and InfluxDB calls,
  which must equal the number of nodes.
"""

from __future__ import annotations

import json
import os
import time

from api_hooks import create_tenant
from bench import config
from bench.config import Sizes
from bench.harness import Context, celery_worker, say, wait_until
from bench.measure import Result, verdict
from influxdb3_standin import StandIn
from worker.db import get_engine
from worker.node_config import NodeConfig
from worker.nodes import NodePool
from worker.placement import place_tenant
from worker.queues import Job
from worker.reconcile import reconcile
from worker.settings import Settings, get_settings

BENCHMARK = "6 · node pool"


def run(ctx: Context, sizes: Sizes) -> list[Result]:
    ctx.fresh_state()
    count, limit = sizes.pool_tenants, sizes.pool_node_limit
    standins = [
        StandIn(token=config.INFLUXDB_TOKEN, database_limit=limit).start()
        for _ in range(sizes.pool_nodes)
    ]
    nodes = tuple(
        NodeConfig(f"node-{i:03d}", s.url, config.INFLUXDB_TOKEN, limit)
        for i, s in enumerate(standins)
    )
    nodes_file = ctx.workdir / "nodes.json"
    nodes_file.write_text(
        json.dumps(
            [
                {"name": n.name, "url": n.url, "token": n.token, "database_limit": limit}
                for n in nodes
            ]
        )
    )
    settings = get_settings().model_copy(update={"influxdb_nodes": nodes})
    os.environ["INFLUXDB_NODES_FILE"] = str(nodes_file)  # the worker started below reads it
    try:
        placement = _placement(ctx, count, nodes)
        provisioning = _provisioning(ctx, count, standins)
        return [placement, provisioning, _reconcile(count, settings)]
    finally:
        del os.environ["INFLUXDB_NODES_FILE"]
        for standin in standins:
            standin.stop()


def _placement(ctx: Context, count: int, nodes: tuple[NodeConfig, ...]) -> Result:
    ctx.db.execute(
        "INSERT INTO tenants (tenant_id, name) "
        "SELECT format('np-%%s', lpad(g::text, 6, '0')), 'pool' FROM generate_series(1, %s) g",
        (count,),
    )
    ids = [row[0] for row in ctx.db.execute("SELECT tenant_id FROM tenants ORDER BY 1")]
    started = time.perf_counter()
    with get_engine().connect() as conn:
        placed = [place_tenant(conn, tenant_id, nodes, exclude=set()) for tenant_id in ids]
    seconds = time.perf_counter() - started
    per_node = dict(
        ctx.db.execute("SELECT influxdb_node, count(*) FROM tenants GROUP BY 1").fetchall()
    )
    spread = (min(per_node.values()), max(per_node.values()))
    capacity = len(nodes) * nodes[0].database_limit
    balanced = None not in placed and spread == (count // len(nodes),) * 2
    result = (
        f"{count:,} placements in {seconds:.2f} s ({count / seconds:,.0f}/s, "
        f"{seconds / count * 1000:.2f} ms each) · tenants per node min {spread[0]} max {spread[1]}"
    )
    say(f"placement: {result}")
    return Result(
        BENCHMARK,
        f"placement only, {len(nodes)} nodes x limit {nodes[0].database_limit}",
        f"{count:,}",
        result,
        "least used first: equal spread, never over a limit",
        verdict(balanced and count <= capacity),
    )


def _provisioning(ctx: Context, count: int, standins: list[StandIn]) -> Result:
    ctx.db.execute("TRUNCATE tenants, provisioning_attempts, influxdb_nodes")
    ctx.empty_broker()
    for index in range(count):
        if not create_tenant(f"np-{index:06d}", "pool")["influxdb"]["queued"]:
            raise RuntimeError("the broker did not take a provisioning message")
    say(f"provisioning: {count:,} tenants queued, starting a worker (concurrency 8)")
    with celery_worker(ctx.workdir, 8):
        wait_until(
            lambda: ctx.settled() >= count,
            timeout=max(300.0, count / 10),
            what=f"{count} tenants provisioned over the pool",
            interval=0.5,
        )
    row = ctx.db.execute(
        "SELECT (SELECT min(started_at) FROM provisioning_attempts),"
        " (SELECT max(influxdb_provisioned_at) FROM tenants)"
    ).fetchone()
    assert row is not None and None not in row
    seconds = (row[1] - row[0]).total_seconds()
    creates = sum(s.create_calls() for s in standins)
    databases = [len(s.databases()) for s in standins]
    states = ctx.states()
    refused = creates - sum(databases)
    result = (
        f"{seconds:.1f} s ({count / seconds:,.0f} tenants/s) · databases per node min "
        f"{min(databases)} max {max(databases)} · {creates:,} create calls, {refused} refused"
    )
    say(f"provisioning: {result}; states {states}")
    return Result(
        BENCHMARK,
        f"placement + provisioning, worker concurrency 8, {len(standins)} nodes",
        f"{count:,}",
        result,
        "all provisioned, no 422",
        verdict(states == {"provisioned": count} and refused == 0),
    )


def _reconcile(count: int, settings: Settings) -> Result:
    pool = NodePool(settings)
    published: list[str] = []

    def publish(tenant_id: str, job: Job, task_id: str | None = None) -> bool:
        published.append(tenant_id)
        return True

    started = time.perf_counter()
    summary = reconcile(get_engine(), pool, settings, publish)
    seconds = time.perf_counter() - started
    nodes = len(settings.influxdb_nodes)
    result = (
        f"{seconds:.2f} s · {summary.influxdb_calls} InfluxDB calls for {nodes} nodes · "
        f"scanned {summary.scanned:,}, requeued {len(published)}"
    )
    say(f"reconcile: {result}")
    return Result(
        BENCHMARK,
        f"one reconcile run, {nodes} nodes",
        f"{count:,}",
        result,
        "InfluxDB calls = nodes, nothing owed",
        verdict(summary.influxdb_calls == nodes and not published and summary.scanned == count),
    )
