"""Benchmark: what the event log costs, and how fast the live stream is (issue 21).

1. **CPU per provisioned tenant, events on vs off**: a burst of tenants provisioned by a
   prefork-4 worker (InfluxDB 20 ms), the machine's CPU (worker, Postgres, Redis, stand-in)
   counted from the first tenant settled to the last, per tenant; once with the event trigger
   ``tenants_write_event`` on, once off, alternated twice (on, off, on, off), medians.
2. **Event to SSE client**: 100 clients follow ``GET /operator/events`` on one API process; a
   writer commits one tenant every 20 ms. Latency = when a client parsed the event minus when
   the writer's commit returned: both in this process, one clock.
3. **Webhook throughput to one receiver**: N tenants created (N ``tenant.created`` events),
   then the dispatcher (``worker.webhook_dispatch.dispatch``, run in this process as the
   webhooks worker runs it) delivers them to one endpoint: a receiver in a process of its own
   that verifies nothing and answers 204 at once. Deliveries per second, fan-out included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import psycopg
import requests

from api_hooks import create_tenant
from bench.config import BENCH_ENV, Sizes
from bench.harness import Context, celery_worker, http_server, say, wait_until
from bench.measure import ProcessCpu, Result, cpu_busy_since, cpu_ticks, median, percentile, verdict
from harness.processes import free_port, http_ok
from worker.db import get_engine
from worker.webhook_config import Endpoint
from worker.webhook_dispatch import Policy, dispatch

CORES = os.cpu_count() or 1
BENCHMARK = "events · the event log and its stream"
TARGET_OVERHEAD = 0.10  # at most 10 % more CPU per tenant with events on
TARGET_P99_MS = 100.0
WRITE_INTERVAL_SECONDS = 0.020
INFLUXDB_LATENCY_SECONDS = 0.020


def run(ctx: Context, sizes: Sizes) -> list[Result]:
    return [
        _cpu_on_vs_off(ctx, sizes.events_tenants),
        _stream_latency(ctx, sizes),
        _webhook_throughput(ctx, sizes.events_webhooks),
    ]


RECEIVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.do_GET()
    def do_GET(self):
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Receiver).serve_forever()
"""


def _webhook_throughput(ctx: Context, count: int) -> Result:
    ctx.fresh_state()
    ctx.db.execute("TRUNCATE webhook_endpoints CASCADE")
    port = free_port()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/"), 10, "the receiver", 0.05)
        endpoint = Endpoint("bench", f"http://127.0.0.1:{port}/hook", (b"k" * 32,))
        policy = Policy(read_timeout=5.0, backoff_cap=1.0)
        with get_engine().connect() as conn:
            dispatch(conn, [endpoint], policy)  # the endpoint starts at the log's horizon
            ctx.db.execute(
                "INSERT INTO tenants (tenant_id, name, influxdb_state) "
                "SELECT 'wh-' || i, 'x', 'pending' FROM generate_series(1, %s) i",
                (count,),
            )
            started = time.monotonic()
            delivered = 0
            while delivered < count and time.monotonic() - started < 600:
                delivered += dispatch(conn, [endpoint], policy).delivered
            seconds = time.monotonic() - started
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
    rate = delivered / seconds
    result = f"{rate:,.0f} deliveries/s ({delivered:,} in {seconds:.1f} s, fan-out included)"
    if delivered < count:
        result += f" · delivered {delivered:,} of {count:,}"
    say(f"webhooks: {result}")
    return Result(
        BENCHMARK,
        "webhook throughput to one receiver (8 in flight, answers 204 at once)",
        f"{count:,}",
        result,
        "-",
        "n/a" if delivered == count else "error",
    )


def _cpu_on_vs_off(ctx: Context, count: int) -> Result:
    measured: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for events_on in (True, False, True, False):
        measured[events_on].append(_cpu_ms_per_tenant(ctx, count, events_on))
    on, off = (median([total for total, _ in measured[key]]) for key in (True, False))
    pg_on, pg_off = (median([pg for _, pg in measured[key]]) for key in (True, False))
    overhead = on / off - 1
    result = (
        f"events on {on:.2f} CPU-ms/tenant, off {off:.2f}: {overhead:+.1%} · of it Postgres "
        f"{pg_on:.2f} vs {pg_off:.2f} · runs on "
        f"{', '.join(f'{v:.2f}' for v, _ in measured[True])}; "
        f"off {', '.join(f'{v:.2f}' for v, _ in measured[False])}"
    )
    say(f"CPU per tenant: {result}")
    return Result(
        BENCHMARK,
        "CPU per provisioned tenant, events on vs off (prefork 4, InfluxDB 20 ms)",
        f"{count:,} x 4",
        result,
        f"≤ +{TARGET_OVERHEAD:.0%}",
        verdict(overhead <= TARGET_OVERHEAD),
    )


def _cpu_ms_per_tenant(ctx: Context, count: int, events_on: bool) -> tuple[float, float]:
    """The machine's CPU-ms per tenant, and Postgres' part of it."""
    ctx.fresh_state()
    ctx.standin.switches(latency=INFLUXDB_LATENCY_SECONDS)
    switch = "ENABLE" if events_on else "DISABLE"
    ctx.db.execute(f"ALTER TABLE tenants {switch} TRIGGER tenants_write_event")
    try:
        for index in range(count):
            if not create_tenant(f"ev-{index:05d}", "Events tenant")["influxdb"]["queued"]:
                raise RuntimeError("the broker did not take a provisioning message")
        with celery_worker(ctx.workdir, 4):
            wait_until(ctx.settled, timeout=60, what="the first tenant", interval=0.05)
            first = ctx.settled()
            cpu_before = cpu_ticks()
            by_process = ProcessCpu()
            by_process.start()
            started = time.monotonic()
            wait_until(lambda: ctx.settled() >= count, 600, f"{count} tenants", interval=0.1)
            seconds = time.monotonic() - started
            busy = cpu_busy_since(cpu_before)
            spent = by_process.seconds()
    finally:
        ctx.db.execute("ALTER TABLE tenants ENABLE TRIGGER tenants_write_event")
        ctx.standin.switches(latency=0)
    tenants = max(1, count - first)
    cpu_ms = 1000 * busy * CORES * seconds / tenants
    postgres_ms = 1000 * spent.get("Postgres", 0.0) / tenants
    say(f"events {'on' if events_on else 'off'}: {cpu_ms:.2f} CPU-ms/tenant")
    return cpu_ms, postgres_ms


def _stream_latency(ctx: Context, sizes: Sizes) -> Result:
    clients, events = sizes.events_clients, sizes.events_stream_events
    token = BENCH_ENV["OPERATOR_TOKEN"]
    committed: dict[str, float] = {}
    arrivals: list[tuple[str, float]] = []
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)
    with http_server("api_hooks", ctx.workdir) as api:

        def client() -> None:
            with requests.get(
                f"{api}/operator/events",
                headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
                params={"type": "tenant.created"},
                stream=True,
                timeout=60,
            ) as response:
                lines = response.iter_lines(decode_unicode=True)
                next(lines)  # the stream's first line (retry:): connected
                ready.wait()
                seen = 0
                for line in lines:
                    if not line.startswith("data: "):
                        continue
                    arrived = time.monotonic()
                    subject = json.loads(line[6:])["subject"]
                    with lock:
                        arrivals.append((subject, arrived))
                    seen += 1
                    if seen == events:
                        return

        threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
        for thread in threads:
            thread.start()
        ready.wait(timeout=60)
        say(f"{clients} stream clients connected; writing {events} events")
        with psycopg.connect(ctx.db.info.dsn, autocommit=True) as writer:
            for index in range(events):
                tenant_id = f"sse-{index:05d}"
                writer.execute(
                    "INSERT INTO tenants (tenant_id, name, influxdb_state) "
                    "VALUES (%s, 'x', 'pending')",
                    (tenant_id,),
                )
                with lock:
                    committed[tenant_id] = time.monotonic()
                time.sleep(WRITE_INTERVAL_SECONDS)
        for thread in threads:
            thread.join(timeout=60)
    # A client may parse an event before the writer's commit() returned: 0, not negative.
    latencies = [max(0.0, arrived - committed[subject]) for subject, arrived in arrivals]
    expected = clients * events
    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    worst = max(latencies) * 1000 if latencies else float("nan")
    result = f"p50 {p50:.1f} ms · p99 {p99:.1f} ms · max {worst:.0f} ms"
    if len(latencies) != expected:
        result += f" · received {len(latencies):,} of {expected:,}"
    say(f"stream latency: {result}")
    return Result(
        BENCHMARK,
        f"event to SSE client, {clients} clients on one API process, one event per 20 ms",
        f"{expected:,}",
        result,
        f"p99 < {TARGET_P99_MS:.0f} ms",
        verdict(p99 < TARGET_P99_MS and len(latencies) == expected),
    )
