"""Benchmark 9: stats of tenants on a healthy server while another server of the pool hangs.

Two servers in the nodes file: ``healthy`` (the run's stand-in process) and ``other`` (an
in-process stand-in). 50 tenants on each, ``provisioned``. The healthy tenants'
``GET /operator/tenants/{id}/stats`` (live check on) is timed three times: with nothing else
going on; while 8 client threads keep asking for the other server's tenants' stats (one request
each 100 ms per thread) and that server answers; and with the same 8 threads while it hangs
(accepts, never answers: each request waits out LIVE_CHECK_TIMEOUT or is told "busy"). The
target compares the last two, so that it measures the hanging, not the 8 threads' own load on
the API: p99 with the other server hanging within 1.5x of p99 with it answering.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Callable, Iterator

import requests

from bench import config
from bench.config import Sizes
from bench.harness import Context, http_server, say
from bench.measure import Result, time_requests, verdict
from bench.stats_endpoint import live_answered
from influxdb3_standin import StandIn

BENCHMARK = "9 · stats while another server hangs"
TENANTS = 50
PRESSURE_THREADS = 8
WARMUP_REQUESTS = 20


def run(ctx: Context, sizes: Sizes) -> list[Result]:
    ctx.fresh_state()
    other = StandIn(token=config.INFLUXDB_TOKEN, database_limit=1000).start()
    nodes_file = ctx.workdir / "nodes.json"
    nodes_file.write_text(
        json.dumps(
            [
                {"name": name, "url": url, "token": config.INFLUXDB_TOKEN, "database_limit": 1000}
                for name, url in (("healthy", ctx.standin.url), ("other", other.url))
            ]
        )
    )
    healthy_ids = [f"ok-{index:03d}" for index in range(TENANTS)]
    other_ids = [f"other-{index:03d}" for index in range(TENANTS)]
    for node, ids in (("healthy", healthy_ids), ("other", other_ids)):
        ctx.db.execute(
            "INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_node) "
            "SELECT id, 'Isolation tenant', 'provisioned', %s FROM unnest(%s::text[]) AS id",
            (node, ids),
        )
    for tenant_id in healthy_ids:
        ctx.standin.write_lines(f"telemetry_{tenant_id}", "telemetry,device=d1 value=1i")
    for tenant_id in other_ids:
        other.create_database(f"telemetry_{tenant_id}")
    os.environ["INFLUXDB_NODES_FILE"] = str(nodes_file)
    try:
        with http_server("api_hooks", ctx.workdir) as api_url:
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {config.OPERATOR_TOKEN}"

            def gets(count: int) -> Iterator[Callable[[], requests.Response]]:
                for index in range(count):
                    url = f"{api_url}/operator/tenants/{healthy_ids[index % TENANTS]}/stats"
                    yield functools.partial(session.get, url, timeout=30)

            time_requests(gets(WARMUP_REQUESTS), live_answered(1))
            say(f"isolation: {sizes.isolation_requests} stats, all quiet")
            quiet = time_requests(gets(sizes.isolation_requests), live_answered(1))
            with _pressure(api_url, other_ids) as answering:
                say(f"isolation: {sizes.isolation_requests} stats, the other server answering")
                busy_api = time_requests(gets(sizes.isolation_requests), live_answered(1))
            other.set_hang(True)
            with _pressure(api_url, other_ids) as hanging:
                say(f"isolation: {sizes.isolation_requests} stats, the other server hanging")
                loaded = time_requests(gets(sizes.isolation_requests), live_answered(1))
    finally:
        del os.environ["INFLUXDB_NODES_FILE"]
        other.set_hang(False)
        other.stop()
    bound = 1.5 * busy_api.p(99)
    count = f"{sizes.isolation_requests:,}"
    threads = f"{PRESSURE_THREADS} threads asking the other server"
    return [
        Result(
            BENCHMARK, "healthy tenants, nothing else asked", count, quiet.summary(), "-", "n/a"
        ),
        Result(
            BENCHMARK,
            f"healthy tenants, {threads} (it answers)",
            count,
            f"{busy_api.summary()} · meanwhile {answering[0][0]} other-server requests",
            "reference",
            "n/a",
        ),
        Result(
            BENCHMARK,
            f"healthy tenants, {threads} (it hangs)",
            count,
            f"{loaded.summary()} · meanwhile {hanging[0][0]} other-server requests, "
            f"{hanging[1][0]} answered busy at once",
            f"p99 ≤ 1.5 x {busy_api.p(99) * 1000:.1f} ms (it answers)",
            verdict(not loaded.unexpected and loaded.p(99) <= bound),
        ),
    ]


class _pressure:
    """Threads asking for the hanging server's tenants' stats until told to stop."""

    def __init__(self, api_url: str, ids: list[str]) -> None:
        self._url, self._ids = api_url, ids
        self._stop = threading.Event()
        self.sent, self.busy = [0], [0]
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._ask, args=(n,)) for n in range(8)]

    def __enter__(self) -> tuple[list[int], list[int]]:
        for thread in self._threads:
            thread.start()
        return self.sent, self.busy

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _ask(self, offset: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {config.OPERATOR_TOKEN}"
        index = offset
        while not self._stop.is_set():
            url = f"{self._url}/operator/tenants/{self._ids[index % len(self._ids)]}/stats"
            live = session.get(url, timeout=30).json()["influxdb"]["live"]
            with self._lock:
                self.sent[0] += 1
                self.busy[0] += str(live["error"]).startswith("busy")
            index += PRESSURE_THREADS
            self._stop.wait(0.1)
