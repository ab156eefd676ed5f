"""The real processes a benchmark runs against, and the run's own Postgres database and Redis DB.

Every process is started in its own session and stopped by process group (SIGTERM, then SIGKILL),
also when a benchmark fails; logs go to the run's work directory.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis
import requests

from bench import config
from harness import databases, processes
from harness.brokers import RabbitMQVhost
from worker.queues import ALL_QUEUES


def say(message: str) -> None:
    """Progress goes to stderr; stdout is the report."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


wait_until = processes.wait_until


@contextlib.contextmanager
def running(
    argv: list[str], log_path: Path, ready: Callable[[], bool], what: str, timeout: float = 30.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` from the repository root, wait until ``ready()``, stop it on exit."""
    process = processes.start(argv, log_path, ready=ready, what=what, timeout=timeout)
    try:
        yield process
    finally:
        processes.stop(process)


def _serve_argv(module: str, port: int) -> list[str]:
    return [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port)]


@contextlib.contextmanager
def http_server(module: str, workdir: Path) -> Iterator[str]:
    """``python -m <module> --port P`` (the operator API or the inline baseline); its base URL."""
    port = config.free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = workdir / f"{module.replace('.', '_')}.log"
    with running(
        _serve_argv(module, port), log_path, lambda: processes.http_ok(f"{base}/healthz"), module
    ):
        yield base


@dataclass
class Worker:
    """A running ``celery -A worker worker`` process."""

    process: subprocess.Popen[bytes]
    hostname: str
    concurrency: int

    def pool_pids(self) -> list[int]:
        """Pids of the pool processes (children of the main worker process)."""
        return processes.pool_pids(self.process.pid)


_worker_starts = 0


@contextlib.contextmanager
def celery_worker(workdir: Path, concurrency: int, pool: str = "prefork") -> Iterator[Worker]:
    """A real worker process, started as the tests start theirs; ready when it says so."""
    global _worker_starts  # noqa: PLW0603 - one log file per start, numbered
    _worker_starts += 1
    hostname = f"bench-worker-{_worker_starts}@{os.uname().nodename}"
    log_path = workdir / f"worker-{_worker_starts}-{pool}-c{concurrency}.log"
    process = processes.start_worker(
        log_path, concurrency=concurrency, hostname=hostname, pool=pool
    )
    try:
        worker = Worker(process, hostname, concurrency)
        if pool == "prefork":  # a threads pool has no child processes to wait for
            wait_until(lambda: len(worker.pool_pids()) >= concurrency, 30, "the worker's pool")
        yield worker
    finally:
        processes.stop(process)


class StandInProcess:
    """``python -m influxdb3_standin`` in its own process, driven by its /_standin/* switches.

    A separate process, as InfluxDB is: its request handling does not share a GIL with the
    benchmark's client.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._control = requests.Session()

    def switches(self, **values: Any) -> dict[str, Any]:
        response = self._control.post(f"{self.url}/_standin/switches", json=values, timeout=5)
        response.raise_for_status()
        return dict(response.json())

    def reset(self) -> None:
        """Empty, healthy, with the raised database limit (reset keeps the limit, set it anyway)."""
        self._control.post(f"{self.url}/_standin/reset", timeout=5).raise_for_status()
        self.switches(database_limit=config.RAISED_DATABASE_LIMIT)

    def request_count(self) -> int:
        """API requests received so far (control requests excluded)."""
        response = self._control.get(f"{self.url}/_standin/state", timeout=10)
        response.raise_for_status()
        return sum(response.json()["requests"].values())

    def write_lines(self, database: str, lines: str) -> None:
        """Write line protocol through the API (creates the database, as InfluxDB 3 does)."""
        response = self._control.post(
            f"{self.url}/api/v3/write_lp",
            params={"db": database},
            data=lines.encode(),
            headers={"Authorization": f"Bearer {config.INFLUXDB_TOKEN}"},
            timeout=5,
        )
        response.raise_for_status()


@contextlib.contextmanager
def standin_process(workdir: Path) -> Iterator[StandInProcess]:
    token_file = workdir / "influxdb_token"
    token_file.write_text(config.INFLUXDB_TOKEN)
    token_file.chmod(0o600)
    argv = [
        sys.executable,
        "-m",
        "influxdb3_standin",
        "--host",
        "127.0.0.1",
        "--port",
        str(config.STANDIN_PORT),
        "--token-file",
        str(token_file),
        "--database-limit",
        str(config.RAISED_DATABASE_LIMIT),
    ]
    ready_url = f"{config.STANDIN_URL}/_standin/state"
    with running(
        argv, workdir / "standin.log", lambda: processes.http_ok(ready_url), "the stand-in"
    ):
        yield StandInProcess(config.STANDIN_URL)


# --------------------------------------------------------------------------------------------
# Postgres and Redis of the run
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def bench_database() -> Iterator[None]:
    """Create the run's database, migrate it with Alembic; drop it at the end."""
    databases.create(config.DATABASE, config.PG_ADMIN_DSN)
    try:
        databases.migrate()
        yield
    finally:
        from worker.db import get_engine  # noqa: PLC0415 - only if the settings are ours

        get_engine().dispose()
        databases.drop(config.DATABASE, config.PG_ADMIN_DSN)


@contextlib.contextmanager
def bench_redis() -> Iterator[Callable[[], None]]:
    """Redis DB 12, emptied before and after the run; yields what empties it between phases."""
    client = redis.Redis(host=config.REDIS_HOST, port=config.REDIS_PORT, db=config.REDIS_DB)
    client.flushdb()

    def empty() -> None:
        client.flushdb()

    try:
        yield empty
    finally:
        client.flushdb()
        client.close()


@contextlib.contextmanager
def bench_rabbitmq() -> Iterator[Callable[[], None]]:
    """The run's RabbitMQ vhost, deleted with its queues at the end; yields what empties its
    queues between phases."""
    vhost = RabbitMQVhost(config.RABBITMQ_VHOST).create()
    try:
        yield lambda: vhost.purge(ALL_QUEUES)
    finally:
        vhost.delete()


@dataclass
class Context:
    """What every benchmark gets: the run's services, sizes and a connection for checks."""

    workdir: Path
    standin: StandInProcess
    empty_broker: Callable[[], None]  # drops every queued message
    db: psycopg.Connection[Any]

    def fresh_state(self) -> None:
        """No tenants, no events, no queued messages, an empty healthy stand-in. Call with no
        worker up. (Events left by the million-tenant benchmarks stayed for the later ones: the
        event stream's row, after them, read p99 1,736 ms in a full run and 10 ms alone.)"""
        self.db.execute(
            "TRUNCATE tenants, provisioning_attempts, provisioning_attempt_totals, influxdb_nodes, "
            "tenant_locations, influxdb_strays, tenant_events"
        )
        self.db.execute("UPDATE tenant_location_map SET horizon = 0")
        self.empty_broker()
        self.standin.reset()

    def insert_placed(self, sql: str, params: tuple[Any, ...]) -> None:
        """Bulk-insert placed tenants with ``sql``, the slot-count and location triggers off,
        then set every node's count and every tenant's location in one statement each, as
        migrations 0007 and 0008 do, and analyze. The slot-count trigger updates its node's row
        once per tenant: within one statement that is quadratic in the tenants placed on one
        node (10,000: 8 s; 100,000: over 5 minutes)."""
        self.db.execute("ALTER TABLE tenants DISABLE TRIGGER tenants_count_slots")
        self.db.execute("ALTER TABLE tenants DISABLE TRIGGER tenants_track_location")
        try:
            self.db.execute(sql, params)
        finally:
            self.db.execute("ALTER TABLE tenants ENABLE TRIGGER tenants_count_slots")
            self.db.execute("ALTER TABLE tenants ENABLE TRIGGER tenants_track_location")
        self.db.execute(
            "INSERT INTO influxdb_nodes (name, placed) SELECT influxdb_node, count(*) "
            "FROM tenants WHERE influxdb_node IS NOT NULL GROUP BY 1 "
            "ON CONFLICT (name) DO UPDATE SET placed = excluded.placed"
        )
        self.db.execute(
            "INSERT INTO tenant_locations (tenant_id, state, node, incarnation, version) "
            "SELECT tenant_id, influxdb_state, influxdb_node, influxdb_incarnation, "
            "nextval('tenant_location_version') FROM tenants "
            "ON CONFLICT (tenant_id) DO UPDATE SET state = excluded.state, node = excluded.node, "
            "incarnation = excluded.incarnation, version = excluded.version, deleted = false"
        )
        self.db.execute("VACUUM ANALYZE tenants")
        self.db.execute("VACUUM ANALYZE tenant_locations")
        self.db.execute("ANALYZE influxdb_nodes")

    def count(self, sql: str, *params: Any) -> int:
        row = self.db.execute(sql, params).fetchone()
        return int(row[0]) if row else 0

    def settled(self) -> int:
        """Tenants whose provisioning has ended, either way."""
        return self.count(
            "SELECT count(*) FROM tenants WHERE influxdb_state IN ('provisioned', 'failed')"
        )

    def states(self) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT influxdb_state, count(*) FROM tenants GROUP BY 1 ORDER BY 1"
        ).fetchall()
        return dict(rows)
