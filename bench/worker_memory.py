"""Benchmark 5: does the worker's memory grow with the number of tasks it has run?

A worker (prefork, concurrency 4, no max-tasks-per-child, as deployed) starts and its idle pool
is measured; then N tenants are created with ``api_hooks.create_tenant`` (from a thread, faster
than the worker drains them) and provisioned against a healthy stand-in. Twice a second the sum
of VmRSS over the pool processes (from /proc/<pid>/status) is sampled with the number of tenants
provisioned so far.

Trend: least-squares slope of RSS over tasks in the second half of the run (the first half
holds the warm-up: imports, connection pools, allocator arenas), and the mean of the last
quarter against the first. "No upward trend" is judged on the second-half slope: the growth it
implies over the second half must stay under 1 % of the end RSS.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from api_hooks import create_tenant
from bench.config import Sizes
from bench.harness import Context, celery_worker, say
from bench.measure import Result, slope, verdict

BENCHMARK = "5 · worker memory"
CONCURRENCY = 4
SAMPLE_SECONDS = 0.5
TREND_TOLERANCE = 0.01  # of the end RSS, over the second half


def vm_rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def run(ctx: Context, sizes: Sizes) -> list[Result]:
    count = sizes.memory_tasks
    ctx.fresh_state()
    samples: list[tuple[int, int]] = []  # (tasks done, summed pool RSS in KiB)
    with celery_worker(ctx.workdir, CONCURRENCY) as worker:
        pool = worker.pool_pids()
        samples.append((0, sum(vm_rss_kib(pid) for pid in pool)))
        say(f"running {count} tasks; sampling the pool's RSS every {SAMPLE_SECONDS:g} s")
        problems: list[str] = []
        creator = threading.Thread(
            target=_create, args=(count, problems), name="bench-creator", daemon=True
        )
        creator.start()
        deadline = time.monotonic() + max(600.0, count * 0.1)
        done = 0
        while done < count:
            if time.monotonic() > deadline or problems:
                raise RuntimeError(f"{done} of {count} tasks done; {problems[:1]}")
            time.sleep(SAMPLE_SECONDS)
            done = ctx.settled()
            samples.append((done, sum(vm_rss_kib(pid) for pid in pool)))
        creator.join()
        replaced = worker.pool_pids() != pool
        states = ctx.states()
    return [_result(count, samples, replaced, states)]


def _create(count: int, problems: list[str]) -> None:
    try:
        for index in range(count):
            if not create_tenant(f"m-{index:06d}", f"Memory tenant {index}")["influxdb"]["queued"]:
                problems.append("the broker did not take a provisioning message")
                return
    except Exception as exc:  # reported by the sampling loop, which then stops the run
        problems.append(repr(exc))


def _result(
    count: int, samples: list[tuple[int, int]], replaced: bool, states: dict[str, int]
) -> Result:
    start, end = samples[0][1], samples[-1][1]
    peak = max(rss for _, rss in samples)
    second_half = [(done, rss) for done, rss in samples if done >= count / 2]
    per_task = slope(second_half)  # KiB per task
    growth = per_task * count / 2
    first_quarter = [rss for done, rss in samples[1:] if done <= count / 4]
    last_quarter = [rss for done, rss in samples if done >= count * 3 / 4]
    quarters = ""
    if first_quarter and last_quarter:
        change = sum(last_quarter) / len(last_quarter) - sum(first_quarter) / len(first_quarter)
        quarters = f" · last vs first quarter mean {change / 1024:+.1f} MiB"
    text = (
        f"pool RSS start {start / 1024:.0f} MiB, end {end / 1024:.0f} MiB, "
        f"max {peak / 1024:.0f} MiB"
        f" · 2nd-half slope {per_task * 1000:+.0f} KiB/1,000 tasks ({growth / 1024:+.1f} MiB over"
        f" the half){quarters} · {len(samples)} samples"
    )
    problems = []
    if replaced:
        problems.append("pool processes were replaced during the run")
    if states.get("provisioned", 0) != count:
        problems.append(f"states {states}")
    if problems:
        text += " · " + "; ".join(problems)
    say(f"memory: {text}")
    return Result(
        BENCHMARK,
        f"{CONCURRENCY} pool processes, healthy InfluxDB",
        f"{count:,} tasks",
        text,
        "no upward trend (2nd-half growth < 1 % of end RSS)",
        verdict(not problems and growth < TREND_TOLERANCE * end),
    )
