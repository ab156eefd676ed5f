"""The real system one schedule runs against, and the faults it can suffer.

A Postgres database of the run's own (``harness.databases``), a redis-server of its own (DB 12;
ours to flush, kill and start again), four InfluxDB stand-ins in this process serving real HTTP
(``n1``-``n3`` in the nodes file at the start, ``n4`` running but not listed yet), a real Celery
worker (prefork) and beat, and the operator API (``harness.processes``). The worker, beat and
API read the same settings: small timeouts, so that faults show and heal within seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import redis
import requests

from harness import databases, processes
from harness.schedule.plan import FIRST_LISTED, NODES
from influxdb3_standin import StandIn

LIMIT = 4  # databases per server, in the stand-ins and in the nodes file
REDIS_DB = 12
# The bound on a settle (docs/schedule.md): PROVISION_TIME_LIMIT (a killed attempt) + two
# reconcile rounds (interval + requeue grace each) + every attempt's backoff cap + the
# deletions' wait for location clients + a margin for a loaded 2-core machine.
SETTLE_BOUND_SECONDS = 6 + 2 * (2 + 2) + 6 * 1.0 + 1.0 + 9


def settings_env() -> dict[str, str]:
    """The settings every process of the run shares (besides URLs and tokens)."""
    return {
        "INFLUXDB_CONNECT_TIMEOUT": "0.5",
        "INFLUXDB_READ_TIMEOUT": "1.0",
        "LIVE_CHECK_TIMEOUT": "0.5",
        "PROVISION_BACKOFF_BASE_SECONDS": "0.2",
        "PROVISION_BACKOFF_CAP_SECONDS": "1.0",
        "PROVISION_MAX_ATTEMPTS": "6",
        "PROVISION_SOFT_TIME_LIMIT": "4",
        "PROVISION_TIME_LIMIT": "6",
        "CELERY_VISIBILITY_TIMEOUT": "20",
        "CELERY_PUBLISH_TIMEOUT": "1",
        "RECONCILE_INTERVAL_SECONDS": "2",
        "LOCATIONS_REFRESH_SECONDS": "0.2",
        "LOCATIONS_MAX_STALENESS_SECONDS": "1.0",
        "LOG_LEVEL": "INFO",
    }


class System:
    """Everything one run starts; ``stop()`` takes all of it down again."""

    def __init__(self, workdir: Path, label: str) -> None:
        self.workdir = workdir
        self.label = label
        self.database = f"tp_sched_{label}_{secrets.token_hex(3)}"
        self.influx_token = "influx-schedule-" + secrets.token_hex(16)
        self.operator_token = "operator-schedule-" + secrets.token_hex(16)
        self.redis_port = processes.free_port()
        self.api_port = processes.free_port()
        self.nodes: dict[str, StandIn] = {}
        self.listed: set[str] = set(FIRST_LISTED)
        self.nodes_file = workdir / "nodes.json"
        self.redis_process: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.beat: subprocess.Popen[bytes] | None = None
        self.api: subprocess.Popen[bytes] | None = None
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {self.operator_token}"
        self.pg: psycopg.Connection[Any] | None = None
        self._worker_log_seen = 0
        self.env = {
            **os.environ,
            **settings_env(),
            "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.database}",
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/{REDIS_DB}",
            "INFLUXDB_NODES_FILE": str(self.nodes_file),
            "OPERATOR_TOKEN": self.operator_token,
            "LOCATIONS_TOKEN": "locations-schedule-" + secrets.token_hex(16),
        }
        for inherited in ("INFLUXDB_URL", "INFLUXDB_NODES", "INFLUXDB_TOKEN_FILE"):
            self.env.pop(inherited, None)
        for variable in ("OPERATOR_TOKEN_FILE", "LOCATIONS_TOKEN_FILE", "INFLUXDB_TOKEN"):
            self.env.pop(variable, None)

    # ---- start and stop ----------------------------------------------------------------------

    def start(self) -> None:
        for name in NODES:
            self.nodes[name] = StandIn(token=self.influx_token, database_limit=LIMIT).start()
        self.write_nodes_file()  # the settings, Alembic's included, read it
        databases.create(self.database)
        databases.migrate(self.env)
        self.pg = psycopg.connect(
            f"postgresql://postgres@127.0.0.1:5432/{self.database}", autocommit=True
        )
        self.start_redis()
        self.start_worker()
        self.beat = processes.start_beat(
            self.workdir / "beat.log", self.workdir / "beat-schedule", self.env
        )
        self.start_api()

    def stop(self) -> None:
        for process in (self.api, self.beat, self.worker, self.redis_process):
            if process is not None:
                processes.stop(process)
        for node in self.nodes.values():
            node.stop()
        self.http.close()
        if self.pg is not None:
            self.pg.close()
        with contextlib.suppress(psycopg.Error):
            databases.drop(self.database)

    def start_worker(self) -> None:
        self.worker = processes.start_worker(
            self.workdir / "worker.log",
            concurrency=4,
            hostname=f"schedule-{self.label}@%h",
            env=self.env,
            timeout=60.0,
        )

    def kill_worker(self) -> None:
        """SIGKILL the worker and its pool at once: no goodbye, messages in hand unacked."""
        if self.worker is not None and self.worker.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.worker.pid, signal.SIGKILL)
            self.worker.wait(timeout=10)

    def worker_alive(self) -> bool:
        return self.worker is not None and self.worker.poll() is None

    def worker_wedged(self) -> bool:
        """True once the worker's log shows Celery's "Unrecoverable error" since the last
        look: the worker then neither consumes nor exits. A lost Redis connection did this
        often until worker/broker_transport.py; a rarer Celery race still can
        (docs/schedule.md)."""
        log = self.workdir / "worker.log"
        size = log.stat().st_size if log.exists() else 0
        if size <= self._worker_log_seen:
            return False
        with log.open("rb") as handle:
            handle.seek(self._worker_log_seen)
            text = handle.read(size - self._worker_log_seen)
        self._worker_log_seen = size
        return b"Unrecoverable error" in text

    def start_api(self) -> None:
        self.api = processes.start_api(self.workdir / "api.log", self.api_port, self.env, 60.0)

    def restart_api(self) -> None:
        if self.api is not None:
            processes.stop(self.api)
        self.start_api()

    def ensure_beat(self) -> bool:
        """Start beat again if it died (a broker outage can end it); True if it had to."""
        if self.beat is not None and self.beat.poll() is None:
            return False
        self.beat = processes.start_beat(
            self.workdir / "beat.log", self.workdir / "beat-schedule", self.env
        )
        return True

    # ---- the broker --------------------------------------------------------------------------

    def start_redis(self) -> None:
        argv = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self.redis_process = processes.start(
            argv,
            self.workdir / "redis.log",
            ready=self.redis_up,
            what="redis-server",
        )

    def redis_up(self) -> bool:
        try:
            with redis.Redis(port=self.redis_port, db=REDIS_DB, socket_timeout=0.5) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def kill_redis(self) -> None:
        if self.redis_process is not None and self.redis_process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.redis_process.pid, signal.SIGKILL)
            self.redis_process.wait(timeout=10)

    def redis_alive(self) -> bool:
        return self.redis_process is not None and self.redis_process.poll() is None

    def flush_broker(self) -> bool:
        """FLUSHDB on the broker's DB: every queued and scheduled message is gone."""
        try:
            with redis.Redis(port=self.redis_port, db=REDIS_DB, socket_timeout=1) as client:
                client.flushdb()
            return True
        except redis.RedisError:
            return False

    # ---- the nodes file and the servers' faults ----------------------------------------------

    def write_nodes_file(self) -> None:
        entries = [
            {"name": n, "url": s.url, "token": self.influx_token, "database_limit": LIMIT}
            for n, s in self.nodes.items()
            if n in self.listed
        ]
        tmp = self.nodes_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(entries))
        tmp.replace(self.nodes_file)  # atomic: a reader never sees half a file

    def set_listed(self, node: str, listed: bool) -> None:
        (self.listed.add if listed else self.listed.discard)(node)
        self.write_nodes_file()

    def fault(self, node: str, kind: str, rate: float = 1.0) -> None:
        server = self.nodes[node]
        if kind == "outage":
            server.set_outage(True)
        elif kind == "hang":
            server.set_hang(True)
        elif kind == "errors":
            server.set_faults(error_rate=rate)
        elif kind == "full":
            # The server holds fewer databases than it will take now: every create is a 422.
            server.set_database_limit(len(server.databases()))

    def heal(self, node: str) -> None:
        server = self.nodes[node]
        server.set_outage(False)
        server.set_hang(False)
        server.set_faults()
        server.set_database_limit(LIMIT)

    # ---- the operator's tools ----------------------------------------------------------------

    def api_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.api_port}{path}"

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> int:
        """One operator API call; its status (0: no answer within 10 s)."""
        try:
            answer = self.http.request(method, self.api_url(path), json=body, timeout=10)
        except requests.RequestException:
            return 0
        return answer.status_code

    def cli(self, *args: str) -> int:
        """``tenantctl --json ARGS`` (``python -m worker``); its exit status."""
        result = subprocess.run(
            [sys.executable, "-m", "worker", "--json", *args],
            cwd=processes.ROOT,
            env=self.env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        return result.returncode

    def write_points(self, node: str, database: str, lines: list[str]) -> bool:
        """Telemetry as a writer sends it to the server it resolved; True on 204."""
        try:
            answer = requests.post(
                f"{self.nodes[node].url}/api/v3/write_lp",
                params={"db": database, "precision": "ns"},
                data="\n".join(lines),
                headers={"Authorization": f"Bearer {self.influx_token}"},
                timeout=0.8,
            )
        except requests.RequestException:
            return False
        return answer.status_code == 204

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        assert self.pg is not None
        return self.pg.execute(sql, params).fetchall()

    def wait(self, seconds: float) -> None:
        time.sleep(seconds)
