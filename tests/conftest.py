"""Shared fixtures: real Postgres, real Redis, a real Celery worker process, the InfluxDB stand-in.

Each test run gets its own Postgres database (created here, dropped at the end) and its own
Redis DB number (TEST_REDIS_DB, default 11); nothing else on the servers is touched. The
settings are chosen before anything imports ``worker``, and are the worker process's too.
Tests that concern the broker run once per broker (``any_broker``): on Redis, and on a RabbitMQ
vhost of the run's own (created on first use, deleted at the end); the rest run on Redis.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import requests

from harness import databases, processes
from harness.brokers import RabbitMQVhost
from harness.processes import ROOT, free_port

PG_ADMIN_DSN = databases.ADMIN_DSN
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "11"))
# One run, one set of tokens: pytest-xdist's workers must collect the same test ids, and some
# ids carry a token. Random per run all the same (xdist names the run in every worker).
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or secrets.token_hex(16)


def _token(purpose: str) -> str:
    return hashlib.sha256(f"{_RUN}:{purpose}".encode()).hexdigest()[:16]


INFLUX_TOKEN = "influx-test-token-" + _token("influx")
OPERATOR_TOKEN = "operator-test-token-" + _token("operator")
LOCATIONS_TOKEN = "locations-test-token-" + _token("locations")
TEST_DATABASE = f"tp_test_{os.getpid()}_{secrets.token_hex(3)}"
TEST_RABBITMQ_VHOST = TEST_DATABASE

__all__ = ["ROOT", "free_port"]

# Fast, small settings so retries and limits show within seconds. The worker inherits them.
TEST_ENV = {
    "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{TEST_DATABASE}",
    "CELERY_BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
    "INFLUXDB_TOKEN": INFLUX_TOKEN,
    "OPERATOR_TOKEN": OPERATOR_TOKEN,
    "LOCATIONS_TOKEN": LOCATIONS_TOKEN,
    "LOCATIONS_REFRESH_SECONDS": "0.2",
    "LOCATIONS_MAX_STALENESS_SECONDS": "0.5",
    "INFLUXDB_CONNECT_TIMEOUT": "0.5",
    "INFLUXDB_READ_TIMEOUT": "1.5",
    "LIVE_CHECK_TIMEOUT": "0.5",
    "PROVISION_BACKOFF_BASE_SECONDS": "0.2",
    "PROVISION_BACKOFF_CAP_SECONDS": "1.0",
    "PROVISION_MAX_ATTEMPTS": "6",
    "PROVISION_SOFT_TIME_LIMIT": "10",
    "PROVISION_TIME_LIMIT": "15",
    "CELERY_VISIBILITY_TIMEOUT": "60",
    "RECONCILE_INTERVAL_SECONDS": "2",
    "LOG_LEVEL": "INFO",
}
os.environ.update(TEST_ENV)
for _inherited in (
    "INFLUXDB_TOKEN_FILE",
    "OPERATOR_TOKEN_FILE",
    "LOCATIONS_TOKEN_FILE",
    "INFLUXDB_URL",
):
    os.environ.pop(_inherited, None)

from influxdb3_standin import StandIn  # noqa: E402
from tests.scripted_http import ScriptedServer  # noqa: E402
from worker.queues import ALL_QUEUES, PROVISIONING_QUEUE  # noqa: E402

# A stand-in stops within this (its serving thread's poll): tests start and stop dozens.
STOP_POLL = 0.005
STANDIN = StandIn(token=INFLUX_TOKEN, database_limit=5).start()
os.environ["INFLUXDB_URL"] = STANDIN.url
INTERVAL = float(TEST_ENV["RECONCILE_INTERVAL_SECONDS"])


class Pool:
    """Stand-in nodes plus the nodes file that the worker, beat and CLI read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.nodes: dict[str, StandIn] = {}
        self.limits: dict[str, int] = {}
        self.unlisted: set[str] = set()  # running, but left out of the nodes file

    def add(self, name: str, limit: int = 5) -> StandIn:
        node = StandIn(token=INFLUX_TOKEN, database_limit=limit, poll_interval=STOP_POLL).start()
        self.nodes[name] = node
        self.limits[name] = limit
        self.write()
        return node

    def unlist(self, name: str) -> None:
        """The server keeps running but leaves the nodes file (renamed, removed by mistake)."""
        self.unlisted.add(name)
        self.write()

    def relist(self, name: str) -> None:
        self.unlisted.discard(name)
        self.write()

    def write(self) -> None:
        entries = [
            {"name": n, "url": s.url, "token": INFLUX_TOKEN, "database_limit": self.limits[n]}
            for n, s in self.nodes.items()
            if n not in self.unlisted
        ]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(entries))
        tmp.replace(self.path)  # atomic: a reader never sees half a file

    def env(self) -> dict[str, str]:
        return {"INFLUXDB_NODES_FILE": str(self.path)}

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    nodes = Pool(tmp_path / "nodes.json")
    yield nodes
    nodes.stop()


@pytest.fixture
def pool_processes(pool: Pool, custom_worker, tmp_path: Path) -> Iterator[None]:
    """A worker and a beat that read the pool's nodes file (call after adding nodes)."""
    custom_worker(concurrency=4, **pool.env())
    beat = start_beat(tmp_path / "beat.log", tmp_path / "schedule", pool.env())
    yield
    stop_process(beat)


def cli(pool: Pool | None, *args: str, expect: int = 0, env: dict[str, str] | None = None) -> Any:
    """Run ``python -m worker --json ARGS`` with the pool's nodes file; its parsed output."""
    result = subprocess.run(
        [sys.executable, "-m", "worker", "--json", *args],
        cwd=ROOT,
        env={**os.environ, **(pool.env() if pool else {}), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == expect, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else None


def wait_for(
    condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout``."""
    try:
        return processes.wait_until(condition, timeout, what or str(condition), interval)
    except TimeoutError as exc:
        pytest.fail(str(exc))


def new_tenant_id(prefix: str = "t") -> str:
    """A tenant id no other test uses, so leftovers of one test never touch another."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def database() -> Iterator[str]:
    """A fresh Postgres database migrated to head with Alembic; dropped after the run."""
    databases.create(TEST_DATABASE)
    try:
        databases.migrate_in_process()
        yield TEST_DATABASE
    finally:
        from worker.db import get_engine  # noqa: PLC0415

        get_engine().dispose()
        databases.drop(TEST_DATABASE)


@pytest.fixture
def scratch_database() -> Iterator[str]:
    """An empty Postgres database of the test's own (for migrations and upgrades)."""
    name = f"tp_scratch_{secrets.token_hex(4)}"
    databases.create(name)
    yield name
    databases.drop(name)


def restore_copy(source: str, target: str) -> str:
    """A backup restored: ``pg_dump`` of ``source`` into ``target``; the SQLAlchemy URL of
    ``target``."""
    server = databases.ADMIN_DSN.rsplit("/", 1)[0]
    dump = subprocess.run(
        ["pg_dump", "--no-owner", f"{server}/{source}"], capture_output=True, check=True
    )
    restore = ["psql", "-q", "-v", "ON_ERROR_STOP=1", f"{server}/{target}"]
    subprocess.run(restore, input=dump.stdout, capture_output=True, check=True)
    return f"postgresql+psycopg://{server.split('://', 1)[1]}/{target}"


@pytest.fixture(scope="session")
def broker() -> Iterator[redis.Redis]:
    """Our own Redis DB, emptied before and after the run."""
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitMQVhost]:
    """Our own vhost of the local RabbitMQ: its queues and messages are this run's only."""
    vhost = RabbitMQVhost(TEST_RABBITMQ_VHOST).create()
    yield vhost
    vhost.delete()


class BrokerUnderTest:
    """The broker a broker test runs on: ``kind`` (redis or rabbitmq) and its URL."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url

    def env(self) -> dict[str, str]:
        """What a process started for the test needs to use this broker."""
        return {"CELERY_BROKER_URL": self.url}


@pytest.fixture(params=["redis", "rabbitmq"])
def any_broker(request: pytest.FixtureRequest) -> BrokerUnderTest:
    """Each broker in turn: Redis (our DB number) and RabbitMQ (our vhost)."""
    if request.param == "rabbitmq":
        vhost: RabbitMQVhost = request.getfixturevalue("rabbitmq")
        return BrokerUnderTest("rabbitmq", vhost.url)
    request.getfixturevalue("broker")
    return BrokerUnderTest("redis", TEST_ENV["CELERY_BROKER_URL"])


def start_api(
    log_path: Path, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """A real operator API process (``python -m api_hooks``); returns it and its base URL."""
    port = free_port()
    try:
        process = processes.start_api(log_path, port, {**os.environ, **(extra_env or {})})
    except (RuntimeError, TimeoutError) as exc:
        pytest.fail(f"the API did not start ({exc}):\n{log_path.read_text(errors='replace')}")
    return process, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def session_worker(
    database: str, broker: redis.Redis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerHandle]:
    """The run's shared worker, started by the first test that needs it (see worker_process)."""
    handle = WorkerHandle(tmp_path_factory.mktemp("worker") / "worker.log")
    yield handle
    handle.stop()


@pytest.fixture
def worker_process(session_worker: WorkerHandle) -> WorkerHandle:
    """A real ``celery -A worker worker`` process (prefork, 4 children), shared by the run.

    Started on demand: a test that swaps in a worker of its own (custom_worker) stops it, and
    only the next test that asks for it starts it again - runs of such tests pay no restarts.
    """
    if session_worker.process is None:
        session_worker.start()
    return session_worker


class WorkerHandle:
    """The session's worker process (stoppable and restartable) and its log file."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = start_worker(self.log_path, concurrency=4, name="test-worker")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def start_worker(
    log_path: Path,
    *,
    concurrency: int,
    name: str,
    extra_env: dict[str, str] | None = None,
    pool: str = "prefork",
    queues: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start a Celery worker from the repo root and wait until it is ready (``queues``: only
    these, comma-separated)."""
    try:
        return processes.start_worker(
            log_path,
            concurrency=concurrency,
            hostname=f"{name}@%h",
            env={**os.environ, **(extra_env or {})},
            pool=pool,
            queues=queues,
        )
    except (RuntimeError, TimeoutError) as exc:
        pytest.fail(f"worker did not start ({exc}):\n{log_path.read_text(errors='replace')}")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Stop a process group we started, escalating to SIGKILL."""
    processes.stop(process)


@pytest.fixture
def influx() -> Iterator[StandIn]:
    """The InfluxDB stand-in, empty and healthy at the start of each test."""
    STANDIN.reset()
    STANDIN.set_token(INFLUX_TOKEN)
    STANDIN.set_database_limit(5)
    yield STANDIN
    STANDIN.set_outage(False)
    STANDIN.set_hang(False)
    STANDIN.reset()


EMPTIED_PER_TEST = (
    "tenants",
    "influxdb_nodes",
    "provisioning_attempts",
    "provisioning_attempt_totals",
    "tenant_locations",
    "influxdb_strays",
    "console_sessions",
    "tenant_events",
    # (an endpoint's cursor holds back the pruning of what it has not had)
    "webhook_deliveries",
    "webhook_endpoints",
)


@pytest.fixture(scope="session")
def held_db(database: str) -> Iterator[list[psycopg.Connection[Any]]]:
    """The test process's connection behind ``db`` (a list: made again when it breaks)."""
    held: list[psycopg.Connection[Any]] = []
    yield held
    for conn in held:
        conn.close()


@pytest.fixture
def db(database: str, held_db: list[psycopg.Connection[Any]]) -> psycopg.Connection[Any]:
    """A direct connection to the test database, for Given / Then steps; tenants emptied."""
    conn = _as_new(held_db, database)
    # DELETE with triggers off leaves what TRUNCATE left (no row trigger fires on either),
    # at 0.5 ms instead of TRUNCATE's 35 ms of file work: the fast layer runs this 400 times.
    conn.execute(
        "SET session_replication_role = replica;"
        + "".join(f"DELETE FROM {table};" for table in EMPTIED_PER_TEST)
        + "RESET session_replication_role;"
        "UPDATE tenant_location_map SET horizon = 0"
    )
    return conn


def _as_new(held: list[psycopg.Connection[Any]], database: str) -> psycopg.Connection[Any]:
    """The process's connection as a new one would be: out of any transaction, with no session
    setting, role, lock, temporary table, prepared statement or LISTEN left (DISCARD ALL);
    connected again if a test broke or closed it. A new backend per test cost the fast layer
    4 to 5 of its 45 to 50 CPU-s (stop 50's A/B): its first queries load the catalog caches."""
    if held:
        conn = held[0]
        try:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()
            conn.autocommit, conn.row_factory = True, psycopg.rows.tuple_row
            conn.execute("DISCARD ALL")
            return conn
        except psycopg.Error:
            conn.close()
    dsn = f"postgresql://postgres@127.0.0.1:5432/{database}"
    # Never prepared: DISCARD ALL drops the server's prepared statements, not psycopg's memory
    # of them.
    held[:] = [psycopg.connect(dsn, autocommit=True, prepare_threshold=None)]
    return held[0]


@pytest.fixture
def api(db: psycopg.Connection[Any]) -> Iterator[Any]:
    """The operator API in-process (FastAPI TestClient), with the operator token set."""
    from fastapi.testclient import TestClient  # noqa: PLC0415

    from api_hooks.app import create_app  # noqa: PLC0415

    with TestClient(create_app()) as client:
        client.headers["Authorization"] = f"Bearer {OPERATOR_TOKEN}"
        yield client


def tenant_row(conn: psycopg.Connection[Any], tenant_id: str) -> dict[str, Any] | None:
    """The tenant's row as a dict, or None."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute("SELECT * FROM tenants WHERE tenant_id = %s", (tenant_id,)).fetchone()


def wait_for_state(
    conn: psycopg.Connection[Any], tenant_id: str, state: str, timeout: float = 20.0
) -> dict[str, Any]:
    """Wait until the tenant reaches ``state``; return its row."""

    def reached() -> dict[str, Any] | None:
        row = tenant_row(conn, tenant_id)
        return row if row and row["influxdb_state"] == state else None

    return wait_for(reached, timeout, what=f"{tenant_id} to be {state}")


@pytest.fixture
def paused_worker(worker_process: WorkerHandle, broker: redis.Redis) -> Iterator[redis.Redis]:
    """The worker stops consuming the queue, so what the API publishes stays visible in Redis."""
    from worker import app  # noqa: PLC0415

    name = wait_for(lambda: next(iter(app.control.ping(timeout=1.0)[0]), None), what="ping")
    stop_consuming(name, ALL_QUEUES)
    broker.delete(*ALL_QUEUES)
    yield broker
    broker.delete(*ALL_QUEUES)
    for queue in ALL_QUEUES:
        app.control.add_consumer(queue, destination=[name], reply=True)


@pytest.fixture
def beat(database: str, broker: redis.Redis, tmp_path: Path) -> Iterator[Path]:
    """A real ``celery -A worker beat`` process (reconcile every 2 s); yields its log path."""
    log_path = tmp_path / "beat.log"
    process = start_beat(log_path, tmp_path / "schedule")
    yield log_path
    stop_process(process)


def start_beat(
    log_path: Path, schedule: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a beat process and wait until it runs."""
    return processes.start_beat(log_path, schedule, {**os.environ, **(extra_env or {})})


def queued(broker: redis.Redis) -> int:
    """Messages waiting in the provisioning queue."""
    return int(broker.llen(PROVISIONING_QUEUE))


def reconcile_stats(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The reconciler's running totals."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute("SELECT * FROM reconcile_stats").fetchone()
    assert row is not None
    return row


@pytest.fixture
def custom_worker(
    session_worker: WorkerHandle, tmp_path: Path
) -> Iterator[Callable[..., WorkerHandle]]:
    """Replace the session worker by one with other settings (e.g. more attempts) for a test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(concurrency: int = 4, pool: str = "prefork", **env: str) -> WorkerHandle:
        session_worker.stop()  # two workers would share the queues
        handle = WorkerHandle(tmp_path / f"custom-worker-{len(started)}.log")
        handle.process = start_worker(
            handle.log_path,
            concurrency=concurrency,
            name=f"custom{len(started)}",
            extra_env=env,
            pool=pool,
        )
        started.append(handle.process)
        return handle

    yield start
    for process in started:
        stop_process(process)


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    """An "InfluxDB" that answers whatever a test scripts (garbage included)."""
    server = ScriptedServer()
    yield server
    server.close()


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print a line of a drill's story to the terminal, even when output is captured."""

    def say(line: str) -> None:
        with capsys.disabled():
            print(f"    [drill] {line}")

    return say


def concurrent_reconciles(count: int) -> list[Any]:
    """Run ``count`` reconcile runs at once in threads (as overlapping beats would)."""
    from worker.db import get_engine  # noqa: PLC0415
    from worker.nodes import NodePool  # noqa: PLC0415
    from worker.reconcile import reconcile  # noqa: PLC0415
    from worker.settings import get_settings  # noqa: PLC0415
    from worker.tasks import publish  # noqa: PLC0415

    settings = get_settings()
    summaries: list[Any] = []

    def run() -> None:
        summaries.append(reconcile(get_engine(), NodePool(settings), settings, publish))

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return summaries


def stop_consuming(worker_name: str, queues: tuple[str, ...]) -> None:
    """Make the worker stop taking messages from ``queues`` - for real, see below."""
    from worker import app  # noqa: PLC0415

    for queue in queues:
        app.control.cancel_consumer(queue, destination=[worker_name], reply=True)
    # The worker's blocking pop that was already waiting (Redis BRPOP, 1 s) can still take one
    # message after the cancel is acknowledged: let it time out first.
    time.sleep(1.5)


def existing_database(
    node: StandIn, tenant_id: str, points: int = 7, incarnation: str | None = None
) -> str:
    """A database of the tenant's name made outside this worker, with ``points`` telemetry
    points and an ``_init`` marker: without incarnation (the inline code's), or another's."""
    database = f"telemetry_{tenant_id}"
    marker = f"_init,tenant={tenant_id} initialized=1i"
    if incarnation:
        marker += f',incarnation="{incarnation}"'
    lines = [f"{marker} 1600000000"] + [
        f"telemetry,device=d{i} temp={20 + i} {1_700_000_000 + i}" for i in range(points)
    ]
    written = requests.post(
        f"{node.url}/api/v3/write_lp",
        params={"db": database, "precision": "s"},
        data="\n".join(lines),
        headers={"Authorization": f"Bearer {INFLUX_TOKEN}"},
        timeout=5,
    )
    assert written.status_code == 204, written.text
    return database


def write_points(server: StandIn, database: str, lines: str) -> None:
    """A writer's points: InfluxDB creates the database on the first write to its name."""
    written = requests.post(
        f"{server.url}/api/v3/write_lp",
        params={"db": database},
        data=lines,
        headers={"Authorization": f"Bearer {INFLUX_TOKEN}"},
        timeout=5,
    )
    assert written.status_code == 204, written.text


def telemetry_points(node: StandIn, database: str) -> int:
    """Telemetry rows in ``database`` on ``node``."""
    return len(node.rows(database, "telemetry"))


def legacy_row(db: Any, tenant_id: str, state: str = "pending", node: str | None = None) -> None:
    """A tenants row as migration 0004 leaves the UI's rows: no server, adopt 'unmarked'."""
    db.execute(
        "INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_node, influxdb_adopt) "
        "VALUES (%s, 'legacy', %s, %s, 'unmarked')",
        (tenant_id, state, node),
    )


@pytest.fixture
def own_redis(tmp_path: Path):
    """A redis-server process of our own (no persistence, like the machine's), which a test
    may kill or give to processes that flush it."""
    port = free_port()
    command = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp_path),
    ]

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        client = redis.Redis(port=port)
        wait_for(lambda: _pings(client), what="redis-server to start")
        return process

    handle = {"process": start(), "start": start, "port": port}
    yield handle
    stop_process(handle["process"])


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
