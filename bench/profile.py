"""Benchmark: where a provisioning run's CPU goes (issue 23).

A burst of tenants is provisioned by a prefork-4 worker (InfluxDB 20 ms) while ``py-spy``
samples every process of the worker (``--subprocesses``, 250 Hz), keeping only samples of a
thread that holds the GIL (``--gil``): Python running, not a thread waiting on a socket. Each
sample's stack is put in the first bucket, from the innermost frame out, whose module it
calls: Postgres (SQLAlchemy, psycopg), HTTP to InfluxDB (requests, urllib3, http.client),
logging, JSON, Celery and kombu (dispatch, acks, task events, the broker client), our code.
Postgres' own side is counted from ``pg_stat_database``: transactions and rows written per
tenant. The collapsed stacks are kept (``--keep-logs``) for a flame graph
(``py-spy`` or ``flamegraph.pl``).
"""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
from pathlib import Path

from api_hooks import create_tenant
from bench.config import Sizes
from bench.harness import Context, celery_worker, say, wait_until
from bench.measure import Result

BENCHMARK = "profile · where a provisioning run's CPU goes"
INFLUXDB_LATENCY_SECONDS = 0.020
RATE_HZ = 250

# (bucket, where its frames' files are), first match from the innermost frame outwards. py-spy
# names a frame "function (path:line)", the path relative to sys.path ("celery/app/task.py").
BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging", ("(logging/", "(worker/logs.py")),
    ("JSON", ("(json/",)),
    ("Postgres client (SQLAlchemy, psycopg)", ("(sqlalchemy/", "(psycopg/", "(psycopg_binary/")),
    ("HTTP to InfluxDB (requests, urllib3)", ("(requests/", "(urllib3/", "(http/client.py")),
    ("broker client (kombu, redis-py)", ("(kombu/", "(redis/")),
    ("Celery (dispatch, acks, task events)", ("(celery/", "(billiard/")),
    ("our code", ("(worker/", "(api_hooks/")),
)


def run(ctx: Context, sizes: Sizes) -> list[Result]:
    spy = str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return [Result(BENCHMARK, "py-spy", "-", "py-spy is not installed", "-", "error")]
    count = sizes.profile_tenants
    ctx.fresh_state()
    ctx.standin.switches(latency=INFLUXDB_LATENCY_SECONDS)
    for index in range(count):
        if not create_tenant(f"pf-{index:05d}", "Profiled tenant")["influxdb"]["queued"]:
            raise RuntimeError("the broker did not take a provisioning message")
    stacks = ctx.workdir / "provisioning.collapsed"
    try:
        with celery_worker(ctx.workdir, 4) as worker:
            wait_until(ctx.settled, timeout=60, what="the first tenant", interval=0.05)
            first = ctx.settled()
            before = _postgres_counts(ctx)
            recorder = subprocess.Popen(
                [
                    *(spy, "record", "--pid", str(worker.process.pid), "--subprocesses"),
                    *("--rate", str(RATE_HZ), "--format", "raw", "--output", str(stacks)),
                    *("--nonblocking", "--gil"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_until(lambda: ctx.settled() >= count, 600, f"{count} tenants", interval=0.1)
            done = ctx.settled() - first
            after = _postgres_counts(ctx)
            recorder.send_signal(signal.SIGINT)
            recorder.wait(timeout=60)
    finally:
        ctx.standin.switches(latency=0)
    samples = _buckets(stacks)
    total = sum(samples.values())
    if not total or not done:
        return [Result(BENCHMARK, "worker", f"{count}", "no samples", "-", "error")]
    ms_per_sample = 1000 / RATE_HZ
    rows = []
    for bucket, hits in samples.most_common():
        rows.append(f"{bucket} {hits * ms_per_sample / done:.2f} ({hits / total:.0%})")
    pg = {name: (after[name] - before[name]) / done for name in after}
    worker_ms = total * ms_per_sample / done
    result = (
        f"worker {worker_ms:.1f} CPU-ms/tenant sampled: " + ", ".join(rows) + " · Postgres per "
        f"tenant: {pg['xact_commit']:.1f} transactions, {pg['tup_inserted']:.1f} rows inserted, "
        f"{pg['tup_updated']:.1f} updated, {pg['tup_deleted']:.1f} deleted"
    )
    say(f"profile: {result}")
    return [
        Result(
            BENCHMARK,
            "CPU-ms per tenant by where it is spent (prefork 4, InfluxDB 20 ms)",
            f"{done:,}",
            result,
            "a map for issue 23's cuts",
            "n/a",
        )
    ]


def _postgres_counts(ctx: Context) -> dict[str, int]:
    row = ctx.db.execute(
        "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted "
        "FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    ctx.db.execute("SELECT pg_stat_clear_snapshot()")
    return dict(
        zip(("xact_commit", "tup_inserted", "tup_updated", "tup_deleted"), row, strict=True)
    )


def _buckets(stacks: Path) -> collections.Counter[str]:
    """Samples per bucket from py-spy's collapsed stacks (``frame;frame;... count``)."""
    counted: collections.Counter[str] = collections.Counter()
    if not stacks.exists():
        return counted
    for line in stacks.read_text(errors="replace").splitlines():
        stack, _, hits = line.rpartition(" ")
        if not hits.isdigit():
            continue
        frames = stack.split(";")
        counted[_bucket(frames)] += int(hits)
    return counted


def _bucket(frames: list[str]) -> str:
    for frame in reversed(frames):
        for bucket, fragments in BUCKETS:
            if any(fragment in frame for fragment in fragments):
                return bucket
    return "other (interpreter, start-up)"
