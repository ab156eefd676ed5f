"""Benchmark 2: a burst of new tenants, from the queue to all ``provisioned`` in Postgres.

The tenants are created with ``api_hooks.create_tenant`` in-process before the worker starts, so
the whole burst waits in Redis. Then a worker with the given concurrency starts; the clock runs
from the first provisioning attempt's start to the last ``influxdb_provisioned_at`` (both from
Postgres, so the worker's own start-up is not counted). The stand-in answers every call after
20 ms.

efficiency = (N x per-tenant InfluxDB time / concurrency) / measured time, with the per-tenant
InfluxDB time = 2 calls (create database + marker write) x 20 ms: 1.0 means the pool is always
waiting on InfluxDB and nothing else (Postgres, Redis, Celery, Python) costs anything.
"""

from __future__ import annotations

import os
import time

from api_hooks import create_tenant
from bench.config import Sizes
from bench.harness import Context, celery_worker, say, wait_until
from bench.measure import ProcessCpu, Result, cpu_busy_since, cpu_ticks, verdict

CORES = os.cpu_count() or 1

BENCHMARK = "2 · bulk onboarding"
INFLUXDB_LATENCY_SECONDS = 0.020
CALLS_PER_TENANT = 2  # create database + write the _init marker
TARGET_TENANTS_PER_SECOND = 300  # issue 11: InfluxDB's pace, or the ceiling and its bound


def run(ctx: Context, sizes: Sizes) -> list[Result]:
    results = []
    for pool, concurrency in sizes.onboarding_pools:
        try:
            results.append(_onboard(ctx, sizes.onboarding_tenants, pool, concurrency))
        except TimeoutError as exc:  # one pool kind stalling must not hide the others' rows
            say(f"{pool} pool, concurrency {concurrency}: {exc}")
            results.append(
                Result(
                    BENCHMARK,
                    f"{pool} pool, concurrency {concurrency}, InfluxDB latency 20 ms",
                    f"{sizes.onboarding_tenants:,}",
                    f"did not finish: {exc} ({ctx.states()})",
                    f"≥ {TARGET_TENANTS_PER_SECOND} tenants/s, or the ceiling and its bound",
                    "error",
                )
            )
    return results


def _onboard(ctx: Context, count: int, pool: str, concurrency: int) -> Result:
    ctx.fresh_state()
    ctx.standin.switches(latency=INFLUXDB_LATENCY_SECONDS)
    case = f"{pool} pool, concurrency {concurrency}"
    say(f"{case}: creating {count} tenants, no worker running yet")
    creating = time.monotonic()
    for index in range(count):
        created = create_tenant(f"b{concurrency}-{index:05d}", f"Onboarding tenant {index}")
        if not created["influxdb"]["queued"]:
            raise RuntimeError("the broker did not take a provisioning message")
    create_seconds = time.monotonic() - creating
    requests_before = ctx.standin.request_count()
    ideal = count * CALLS_PER_TENANT * INFLUXDB_LATENCY_SECONDS / concurrency
    with celery_worker(ctx.workdir, concurrency, pool):
        # Machine CPU from the first finished tenant to the last: is the drain CPU-bound?
        wait_until(ctx.settled, timeout=60, what="the first tenant", interval=0.05)
        cpu_before = cpu_ticks()
        by_process = ProcessCpu()
        by_process.start()
        wait_until(
            lambda: ctx.settled() >= count,
            timeout=max(120.0, 30 * ideal),
            what=f"{count} tenants to be provisioned",
            interval=0.2,
        )
        cpu_busy = cpu_busy_since(cpu_before)
        spent = by_process.seconds()
    calls = ctx.standin.request_count() - requests_before
    states = ctx.states()
    row = ctx.db.execute(
        "SELECT (SELECT min(started_at) FROM provisioning_attempts),"
        " (SELECT max(influxdb_provisioned_at) FROM tenants),"
        " (SELECT avg(extract(epoch FROM finished_at - started_at))::float"
        "  FROM provisioning_attempts WHERE outcome = 'provisioned')"
    ).fetchone()
    ctx.standin.switches(latency=0)
    assert row is not None and None not in row
    first_start, last_done, attempt_seconds = row
    measured = (last_done - first_start).total_seconds()
    efficiency = ideal / measured
    rate = count / measured
    # All the machine's CPU time (worker, Postgres, Redis, the stand-in) per tenant, and the
    # rate at which it would take both cores: the bound when InfluxDB is not the limit.
    cpu_ms = 1000 * cpu_busy * CORES * measured / count
    ceiling = CORES * 1000 / cpu_ms if cpu_ms else float("inf")
    # Where a pool slot's time per tenant went: the attempt (state commit + the two InfluxDB
    # calls) and everything around it (Celery dispatch and ack, lock, load, final commit).
    slot_seconds = concurrency * measured / count
    influxdb_seconds = CALLS_PER_TENANT * INFLUXDB_LATENCY_SECONDS
    result = (
        f"{measured:.1f} s (ideal {ideal:.1f} s, {rate:.0f} tenants/s) · "
        f"efficiency {efficiency:.2f} · {calls / count:.2f} InfluxDB calls/tenant · "
        f"per tenant a pool slot was busy {slot_seconds * 1000:.0f} ms: attempt "
        f"{attempt_seconds * 1000:.0f} ms (of it InfluxDB {influxdb_seconds * 1000:.0f} ms) + "
        f"{(slot_seconds - attempt_seconds) * 1000:.0f} ms around it · "
        f"machine CPU {cpu_busy:.0%} busy, {cpu_ms:.1f} CPU-ms/tenant: ceiling "
        f"{ceiling:.0f} tenants/s when both cores are busy · CPU-ms/tenant by process: "
        + ", ".join(
            f"{group} {1000 * seconds / count:.1f}"
            for group, seconds in sorted(spent.items(), key=lambda item: -item[1])
            if 1000 * seconds / count >= 0.1
        )
    )
    problems = {state: n for state, n in states.items() if state != "provisioned"}
    if problems:
        result += f" · not provisioned: {problems}"
    say(f"{case}: {result}; the {count} creates took {create_seconds:.1f} s")
    return Result(
        BENCHMARK,
        f"{case}, InfluxDB latency 20 ms",
        f"{count:,}",
        result,
        f"≥ {TARGET_TENANTS_PER_SECOND} tenants/s, or the ceiling and its bound",
        verdict(not problems and rate >= TARGET_TENANTS_PER_SECOND),
    )
