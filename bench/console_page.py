"""Benchmark 7: the operator console's tenants page over 100,000 tenants, signed in as an
operator would be: the first page and a page deep in the list (90% of the way down), with and
without a state filter. Each answer must be a 200 with a full page of 50 rows.

Tenants are inserted in one statement, one second of last change apart, 5% of them failed.
The deep page's cursor is the one the page itself would link to (``reads.encode_cursor``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import requests

from api_hooks.console.reads import PAGE_SIZE, encode_cursor
from bench import config
from bench.config import Sizes
from bench.harness import Context, http_server, say
from bench.measure import Result, time_requests, verdict
from harness.console import sign_in

BENCHMARK = "7 · operator console: tenants page"
TARGET_SECONDS = 0.100
WARMUP_REQUESTS = 20
DEEP = 0.9


def run(ctx: Context, sizes: Sizes) -> list[Result]:
    ctx.fresh_state()
    total = sizes.console_tenants
    say(f"console: inserting {total:,} tenants")
    ctx.insert_placed(
        """
        INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_error_reason,
                             influxdb_attempts, influxdb_node, influxdb_updated_at)
        SELECT 'c-' || lpad(i::text, 7, '0'), 'Console tenant ' || i,
               CASE WHEN i %% 20 = 0 THEN 'failed' ELSE 'provisioned' END,
               CASE WHEN i %% 20 = 0 THEN 'unauthorized' END, 1, 'default',
               now() - make_interval(secs => %s - i)
        FROM generate_series(1, %s) AS i
        """,
        (total, total),
    )
    ctx.db.execute("ANALYZE tenants")
    deep, deep_failed = _cursor(ctx, None, total * DEEP), _cursor(ctx, "failed", total * DEEP / 20)
    pages = {
        "first page": "",
        "deep page": f"?after={deep}",
        "failed, first page": "?state=failed",
        "failed, deep page": f"?state=failed&after={deep_failed}",
    }
    results: list[Result] = []
    with http_server("api_hooks", ctx.workdir) as api_url:
        session = _signed_in(f"{api_url}/operator/console")

        def gets(query: str, count: int) -> Iterator[Callable[[], requests.Response]]:
            url = f"{api_url}/operator/console/tenants{query}"
            for _ in range(count):
                yield functools.partial(session.get, url, timeout=30)

        for case, query in pages.items():
            time_requests(gets(query, WARMUP_REQUESTS), _full_page)
            say(f"console, {case}: {sizes.console_requests} requests")
            timings = time_requests(gets(query, sizes.console_requests), _full_page)
            results.append(
                Result(
                    BENCHMARK,
                    f"{total:,} tenants, {case}",
                    f"{len(timings.seconds):,}",
                    timings.summary(),
                    f"p99 < {TARGET_SECONDS * 1000:.0f} ms",
                    verdict(not timings.unexpected and timings.p(99) < TARGET_SECONDS),
                )
            )
    return results


def _cursor(ctx: Context, state: str | None, rows_before: float) -> str:
    """The cursor of the row after which the page starts, as the pager would link it (never
    so deep that less than a full page and its next link are left)."""
    matching = ctx.count(
        "SELECT count(*) FROM tenants WHERE %s::text IS NULL OR influxdb_state = %s", state, state
    )
    rows_before = min(rows_before, matching - PAGE_SIZE - 2)
    row = ctx.db.execute(
        "SELECT influxdb_updated_at, tenant_id FROM tenants"
        " WHERE %s::text IS NULL OR influxdb_state = %s"
        " ORDER BY influxdb_updated_at DESC, tenant_id DESC OFFSET %s LIMIT 1",
        (state, state, int(rows_before)),
    ).fetchone()
    assert row is not None, "fewer tenants than the deep page needs"
    return encode_cursor(row[0], row[1])


def _signed_in(console: str) -> requests.Session:
    """A session signed in through the form, as a browser is."""
    session = requests.Session()
    answer = sign_in(session, console, config.OPERATOR_TOKEN)
    assert answer.status_code == 200 and "Overview" in answer.text, answer.status_code
    return session


def _full_page(response: requests.Response) -> str | None:
    """200 with a full page of tenants and a link to the next."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    rows = response.text.count("<tr data-tenant=")
    return None if rows == PAGE_SIZE and 'id="older"' in response.text else f"{rows} rows"
