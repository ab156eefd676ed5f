"""Benchmark 4: ``GET /operator/tenants/{id}/stats`` with the live check, InfluxDB healthy and
hanging (accepts, never answers); LIVE_CHECK_TIMEOUT is set to 2 s explicitly (bench.config).

Tenants are inserted ``provisioned`` and their databases hold two telemetry rows, so a healthy
answer must say ``exists: true, telemetry_count: 2`` and a hanging one must name the timeout.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import requests

from bench import config
from bench.config import Sizes
from bench.harness import Context, http_server, say
from bench.measure import Check, Result, time_requests, verdict

BENCHMARK = "4 · GET /operator/tenants/{id}/stats"
TENANTS = 50
WARMUP_REQUESTS = 20
# The answer may take the live check's bound plus the Postgres read and HTTP around it.
HANGING_MARGIN_SECONDS = 0.25


def run(ctx: Context, sizes: Sizes) -> list[Result]:
    ctx.fresh_state()
    ids = [f"st-{index:03d}" for index in range(TENANTS)]
    ctx.db.execute(
        """
        INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_attempts,
                             influxdb_provisioned_at)
        SELECT tenant_id, 'Stats tenant', 'provisioned', 1, now()
        FROM unnest(%s::text[]) AS tenant_id
        """,
        (ids,),
    )
    for tenant_id in ids:
        ctx.standin.write_lines(
            f"telemetry_{tenant_id}", "telemetry,device=d1 value=1i\ntelemetry,device=d2 value=2i"
        )
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {config.OPERATOR_TOKEN}"
    with http_server("api_hooks", ctx.workdir) as api_url:

        def gets(count: int) -> Iterator[Callable[[], requests.Response]]:
            for index in range(count):
                url = f"{api_url}/operator/tenants/{ids[index % TENANTS]}/stats"
                yield functools.partial(session.get, url, timeout=30)

        time_requests(gets(WARMUP_REQUESTS), live_answered(2))
        say(f"stats, healthy: {sizes.stats_healthy_requests} requests")
        healthy = time_requests(gets(sizes.stats_healthy_requests), live_answered(2))
        ctx.standin.switches(hang=True)
        say(f"stats, hanging: {sizes.stats_hanging_requests} requests")
        try:
            hanging = time_requests(gets(sizes.stats_hanging_requests), _live_timed_out)
        finally:
            ctx.standin.switches(hang=False)
    bound = config.LIVE_CHECK_TIMEOUT + HANGING_MARGIN_SECONDS
    return [
        Result(
            BENCHMARK,
            "InfluxDB healthy (live check answered)",
            f"{len(healthy.seconds):,}",
            healthy.summary(),
            "none set (reported)",
            "n/a" if not healthy.unexpected else "missed",
        ),
        Result(
            BENCHMARK,
            f"InfluxDB hanging, LIVE_CHECK_TIMEOUT={config.LIVE_CHECK_TIMEOUT:g} s",
            f"{len(hanging.seconds):,}",
            hanging.summary(),
            f"p99 ≤ {bound:g} s (timeout + {HANGING_MARGIN_SECONDS * 1000:.0f} ms)",
            verdict(not hanging.unexpected and hanging.p(99) <= bound),
        ),
    ]


def live_answered(rows: int) -> Check:
    """A check of stats answers: 200, and the live check found the database with ``rows``."""

    def check(response: requests.Response) -> str | None:
        if response.status_code != 200:
            return f"HTTP {response.status_code}"
        live = response.json()["influxdb"]["live"]
        return None if live["exists"] and live["telemetry_count"] == rows else f"live {live}"

    return check


def _live_timed_out(response: requests.Response) -> str | None:
    """200, and the live check gave up with a timeout."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    error = response.json()["influxdb"]["live"]["error"]
    return None if str(error).startswith("timeout") else f"live error {error}"
