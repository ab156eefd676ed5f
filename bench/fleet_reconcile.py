"""Benchmark 12: one reconcile run over a whole fleet - 1,000,000 provisioned tenants on 1,000
servers - set-based, with one list call per server and memory that does not grow with it.

Tenants are inserted with ``generate_series`` as ``provisioned`` an hour ago, round robin over
the servers (the slot-count trigger off during the bulk insert, the counts then filled in one
statement, as migration 0007 does). Each server is a stand-in holding its tenants' databases,
and the soft-deleted copy of a deprovisioned tenant's (churn: read, and judged for nobody);
the stand-ins live in a child process, so their answering costs the measured process nothing
but the HTTP round trips, as real servers would. The run is ``worker.reconcile.reconcile``
with a publish function that only counts: a healthy fleet owes nothing.

Memory: the peak resident size of this process is read before and after the run (Linux
``VmHWM``, reset between runs through ``/proc/self/clear_refs``); the listings alone are about
50 bytes a name, so a run that held them all would grow by ~50 MB at 1,000,000.
"""

from __future__ import annotations

import multiprocessing
import time
from multiprocessing.connection import Connection
from pathlib import Path

from bench import config
from bench.config import Sizes
from bench.harness import Context, say
from bench.measure import Result, median, verdict
from worker.db import get_engine
from worker.node_config import NodeConfig
from worker.nodes import NodePool
from worker.queues import Job
from worker.reconcile import ReconcileSummary, reconcile
from worker.settings import get_settings

BENCHMARK = "12 · fleet reconcile"
TARGET_SECONDS = 5.0
TARGET_GROWTH_MB = 32.0  # well under what holding every name would take

_INSERT = """
INSERT INTO tenants (tenant_id, name, status, influxdb_state, influxdb_attempts, influxdb_node,
                     influxdb_enqueued_at, influxdb_provisioned_at, influxdb_updated_at)
SELECT format('fl-%%s', lpad(g::text, 7, '0')), 'Fleet tenant', 'active', 'provisioned', 1,
       format('fleet-%%s', lpad((g %% %s)::text, 4, '0')), now() - interval '1 hour',
       now() - interval '1 hour', now() - interval '1 hour'
FROM generate_series(0, %s) AS g
"""


def run(ctx: Context, sizes: Sizes) -> list[Result]:
    results = []
    for servers, per_server in sizes.fleet_reconciles:
        ctx.fresh_state()
        results.append(_one_fleet(ctx, servers, per_server, sizes.reconcile_runs))
    return results


def _one_fleet(ctx: Context, servers: int, per_server: int, runs: int) -> Result:
    total = servers * per_server
    started = time.perf_counter()
    ctx.insert_placed(_INSERT, (servers, total - 1))
    say(f"fleet: {total:,} tenants inserted in {time.perf_counter() - started:.1f} s")

    parent, child = multiprocessing.get_context("spawn").Pipe()
    host = multiprocessing.get_context("spawn").Process(
        target=_host_standins, args=(child, config.INFLUXDB_TOKEN, servers, per_server), daemon=True
    )
    host.start()
    try:
        urls: list[str] = parent.recv()
        say(f"fleet: {servers:,} stand-ins up, {total:,} databases")
        nodes = tuple(
            NodeConfig(f"fleet-{i:04d}", url, config.INFLUXDB_TOKEN, per_server * 2)
            for i, url in enumerate(urls)
        )
        settings = get_settings().model_copy(update={"influxdb_nodes": nodes})
        published: list[str] = []

        def publish(tenant_id: str, job: Job, task_id: str | None = None) -> bool:
            published.append(tenant_id)
            return True

        measured: list[tuple[float, float, ReconcileSummary, int]] = []
        for _ in range(runs):
            parent.send("count")
            before: int = parent.recv()
            _reset_peak()
            rss_before = _peak_mb()
            began = time.perf_counter()
            summary = reconcile(get_engine(), NodePool(settings), settings, publish)
            wall = time.perf_counter() - began
            growth = _peak_mb() - rss_before
            parent.send("count")
            measured.append((wall, growth, summary, parent.recv() - before))
    finally:
        parent.send("stop")
        host.join(timeout=30)
    return _result(servers, total, measured, published)


def _result(
    servers: int,
    total: int,
    measured: list[tuple[float, float, ReconcileSummary, int]],
    published: list[str],
) -> Result:
    walls = [wall for wall, _, _, _ in measured]
    growth = max(g for _, g, _, _ in measured)
    summaries = [s for _, _, s, _ in measured]
    calls = sorted({c for _, _, _, c in measured})
    counted = sorted({s.influxdb_calls for s in summaries})
    examined = max(s.examined for s in summaries)
    problems = [
        s.influxdb_error or s.line() for s in summaries if s.influxdb_error or s.requeued or s.drift
    ]
    wall = median(walls)
    text = (
        f"{wall:.2f} s (median of {len(walls)}, max {max(walls):.2f} s) · list calls: summary "
        f"{'/'.join(map(str, counted))}, stand-ins saw {'/'.join(map(str, calls))} · scanned "
        f"{summaries[0].scanned:,}, judged one by one {examined:,} · peak RSS grew "
        f"{growth:.1f} MB"
    )
    if problems or published:
        text += f" · unexpected: {str(problems[:1])[:200]}, published {len(published)}"
    met = (
        wall < TARGET_SECONDS
        and calls == [servers] == counted
        and growth < TARGET_GROWTH_MB
        and not problems
        and not published
        and all(s.scanned == total for s in summaries)
    )
    say(f"fleet reconcile at {total:,} over {servers:,}: {text}")
    return Result(
        BENCHMARK,
        f"{total:,} provisioned tenants over {servers:,} servers",
        f"{total:,}",
        text,
        f"< {TARGET_SECONDS:g} s, list calls = servers, peak RSS growth < {TARGET_GROWTH_MB:g} MB",
        verdict(met),
    )


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current size


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _host_standins(pipe: Connection, token: str, servers: int, per_server: int) -> None:
    """The child (spawned: ``token`` is the parent's): ``servers`` stand-ins, the database of
    tenant g on server g mod servers, until told to stop."""
    from influxdb3_standin import StandIn  # noqa: PLC0415 - only the child needs it

    prefix = get_settings().influxdb_database_prefix
    # A long poll interval: 1,000 serving threads waking every 50 ms kept a core busy. They are
    # not stopped one by one (each stop waits out that interval): the process exits.
    standins = [
        StandIn(token=token, database_limit=per_server * 2, poll_interval=10.0).start()
        for _ in range(servers)
    ]
    for g in range(servers * per_server):
        standins[g % servers].create_database(f"{prefix}fl-{g:07d}")
    # And churn: each server holds the soft-deleted copy of a deprovisioned tenant's database
    # (listed with show_deleted=true, for 72 h): the run reads them all, and judges none.
    for i, standin in enumerate(standins):
        standin.create_database(f"{prefix}gone-{i:04d}")
        standin.delete_database(f"{prefix}gone-{i:04d}")
    pipe.send([s.url for s in standins])
    while (command := pipe.recv()) != "stop":
        assert command == "count"
        pipe.send(sum(s.request_count() for s in standins))
