"""Benchmark 8: ``GET /metrics`` with 1,000,000 rows in the attempt log.

The log is filled with ``generate_series`` (outcomes and reasons in the proportions of a fleet
with outages: 80% provisioned, 15% retrying/unreachable, 5% failed/unauthorized) and the running
totals set to match it, as migration 0006 fills them; then ``ANALYZE``. For comparison, the
query ``/metrics`` ran before the totals (a ``GROUP BY`` over the whole log) is timed alone.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Iterator

import requests

from bench import config
from bench.config import Sizes
from bench.harness import Context, http_server, say
from bench.measure import Result, fmt_seconds, time_requests, verdict

BENCHMARK = "8 · GET /metrics"
TARGET_SECONDS = 0.050
WARMUP_REQUESTS = 20
OLD_QUERY = "SELECT outcome, reason, count(*) FROM provisioning_attempts GROUP BY outcome, reason"


def run(ctx: Context, sizes: Sizes) -> list[Result]:
    ctx.fresh_state()
    rows = sizes.metrics_attempt_rows
    say(f"metrics: {rows:,} attempt rows")
    ctx.db.execute(
        """
        INSERT INTO provisioning_attempts
            (tenant_id, attempt, started_at, finished_at, outcome, reason, node)
        SELECT 't-' || (i %% 100000), 1 + i %% 6, now() - make_interval(secs => i),
               now() - make_interval(secs => i),
               CASE WHEN i %% 20 < 16 THEN 'provisioned'
                    WHEN i %% 20 < 19 THEN 'retrying' ELSE 'failed' END,
               CASE WHEN i %% 20 < 16 THEN NULL
                    WHEN i %% 20 < 19 THEN 'unreachable' ELSE 'unauthorized' END,
               'default'
        FROM generate_series(1, %s) AS i
        """,
        (rows,),
    )
    ctx.db.execute(
        "INSERT INTO provisioning_attempt_totals (outcome, reason, shard, total) "
        "SELECT outcome, coalesce(reason, ''), 0, count(*) FROM provisioning_attempts "
        "GROUP BY outcome, coalesce(reason, '')"
    )
    ctx.db.execute("ANALYZE provisioning_attempts")
    old = []
    for _ in range(3):
        started = time.perf_counter()
        ctx.db.execute(OLD_QUERY).fetchall()
        old.append(time.perf_counter() - started)
    with http_server("api_hooks", ctx.workdir) as api_url:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {config.OPERATOR_TOKEN}"

        def gets(count: int) -> Iterator[Callable[[], requests.Response]]:
            for _ in range(count):
                yield functools.partial(session.get, f"{api_url}/metrics", timeout=30)

        expected = f"{rows * 16 // 20:,}"
        time_requests(gets(WARMUP_REQUESTS), lambda r: _counted(r, rows))
        say(f"metrics: {sizes.console_requests} scrapes")
        timings = time_requests(gets(sizes.console_requests), lambda r: _counted(r, rows))
    return [
        Result(
            BENCHMARK,
            f"{rows:,} attempt rows (provisioned {expected})",
            f"{len(timings.seconds):,}",
            f"{timings.summary()} · the GROUP BY it replaced: "
            f"{fmt_seconds(statistics.median(old))} alone (median of 3)",
            f"p99 < {TARGET_SECONDS * 1000:.0f} ms",
            verdict(not timings.unexpected and timings.p(99) < TARGET_SECONDS),
        )
    ]


def _counted(response: requests.Response, rows: int) -> str | None:
    """200, and the attempts counter adds up to every row of the log."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in response.text.splitlines()
        if line.startswith("tenant_provisioner_provisioning_attempts_total{")
    )
    return None if total == rows else f"attempts total {total:g} != {rows}"
