"""Benchmark 11: the first reconcile after an upgrade adopts the UI's tenants where their
databases are - 100,000 tenants over 100 servers, in one run, with one listing per server.

The rows are what migration 0004 leaves of the UI's table: ``pending``, no server,
``influxdb_adopt = 'unmarked'``, never queued. Their databases exist, 1,000 on each of 100
in-process stand-ins (created through ``StandIn.create_database``, no HTTP). The run is
``worker.reconcile.reconcile`` itself with a publish function that only counts: every tenant
must be adopted on the server holding its database and queued once (its provisioning writes the
marker), none given a new home, and the stand-ins must have seen exactly one call each.
"""

from __future__ import annotations

import time

from bench import config
from bench.config import Sizes
from bench.harness import Context, say
from bench.measure import Result, verdict
from influxdb3_standin import StandIn
from worker.db import get_engine
from worker.node_config import NodeConfig
from worker.nodes import NodePool
from worker.queues import Job
from worker.reconcile import reconcile
from worker.settings import get_settings

BENCHMARK = "11 · upgrade adoption"


def run(ctx: Context, sizes: Sizes) -> list[Result]:
    ctx.fresh_state()
    servers, per_server = sizes.adoption_servers, sizes.adoption_per_server
    total = servers * per_server
    standins = [
        StandIn(token=config.INFLUXDB_TOKEN, database_limit=per_server * 2).start()
        for _ in range(servers)
    ]
    try:
        nodes = tuple(
            NodeConfig(f"old-{i:03d}", s.url, config.INFLUXDB_TOKEN, per_server * 2)
            for i, s in enumerate(standins)
        )
        settings = get_settings().model_copy(update={"influxdb_nodes": nodes})
        say(f"adoption: {total:,} tenants from the UI's table over {servers} servers")
        ctx.db.execute(
            "INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_adopt) "
            "SELECT 'ui-' || lpad(i::text, 6, '0'), 'UI tenant', 'pending', 'unmarked' "
            "FROM generate_series(0, %s) AS i",
            (total - 1,),
        )
        ctx.db.execute("ANALYZE tenants")
        for number in range(total):
            home = standins[number % servers]
            home.create_database(settings.database_name(f"ui-{number:06d}"))
        published: list[str] = []

        def publish(tenant_id: str, job: Job, task_id: str | None = None) -> bool:
            published.append(tenant_id)
            return True

        before = sum(s.request_count() for s in standins)
        started = time.perf_counter()
        summary = reconcile(get_engine(), NodePool(settings), settings, publish)
        wall = time.perf_counter() - started
        calls = sum(s.request_count() for s in standins) - before
        misplaced = ctx.count(
            "SELECT count(*) FROM tenants WHERE influxdb_node IS DISTINCT FROM "
            "'old-' || lpad((substr(tenant_id, 4)::int %% %s)::text, 3, '0')",
            servers,
        )
    finally:
        for standin in standins:
            standin.stop()
    text = (
        f"{wall:.2f} s · adopted {summary.adopted:,}, new home {summary.new_home}, "
        f"unlocated {summary.unlocated} · queued {len(published):,} "
        f"({len(set(published)):,} distinct) · list calls: summary {summary.influxdb_calls}, "
        f"stand-ins saw {calls} · tenants not on the server holding their database: {misplaced}"
    )
    met = (
        summary.adopted == total
        and summary.influxdb_calls == servers
        and calls == servers
        and misplaced == 0
        and len(set(published)) == total == len(published)
    )
    say(f"adoption: {text}")
    return [
        Result(
            BENCHMARK,
            f"{total:,} tenants from the UI's table over {servers} servers",
            f"{total:,}",
            text,
            f"one run, {servers} list calls, every tenant adopted where its database is",
            verdict(met),
        )
    ]
