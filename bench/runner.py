"""Runs the selected benchmarks against the run's own services and prints one report."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import psycopg

from bench import (
    adoption_scale,
    config,
    console_page,
    events,
    fleet_reconcile,
    live_isolation,
    locations,
    metrics_scrape,
    node_pool,
    onboarding,
    page,
    placement_scale,
    profile,
    reconcile_cost,
    request_latency,
    stats_endpoint,
    time_to_ready,
    worker_memory,
)
from bench.config import Sizes
from bench.harness import (
    Context,
    bench_database,
    bench_rabbitmq,
    bench_redis,
    say,
    standin_process,
)
from bench.measure import Result
from bench.report import loadavg, machine_facts, render

PAGE = config.ROOT / "docs" / "benchmarks.md"

Benchmark = Callable[[Context, Sizes], list[Result]]

BENCHMARKS: dict[str, tuple[str, Benchmark]] = {
    "latency": (request_latency.BENCHMARK, request_latency.run),
    "onboarding": (onboarding.BENCHMARK, onboarding.run),
    "reconcile": (reconcile_cost.BENCHMARK, reconcile_cost.run),
    "stats": (stats_endpoint.BENCHMARK, stats_endpoint.run),
    "memory": (worker_memory.BENCHMARK, worker_memory.run),
    "pool": (node_pool.BENCHMARK, node_pool.run),
    "console": (console_page.BENCHMARK, console_page.run),
    "metrics": (metrics_scrape.BENCHMARK, metrics_scrape.run),
    "isolation": (live_isolation.BENCHMARK, live_isolation.run),
    "placement": (placement_scale.BENCHMARK, placement_scale.run),
    "adoption": (adoption_scale.BENCHMARK, adoption_scale.run),
    "fleet": (fleet_reconcile.BENCHMARK, fleet_reconcile.run),
    "locations": (locations.BENCHMARK, locations.run),
    "events": (events.BENCHMARK, events.run),
    "profile": (profile.BENCHMARK, profile.run),
    "ready": (time_to_ready.BENCHMARK, time_to_ready.run),
}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bash bench/run",
        description="Run the benchmarks of docs/benchmarks.md; the report goes to stdout.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes: a smoke run of every benchmark (a few minutes)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted(BENCHMARKS),
        metavar="NAME",
        help=f"run only these ({', '.join(BENCHMARKS)})",
    )
    parser.add_argument(
        "--broker",
        choices=("redis", "rabbitmq"),
        default="redis",
        help="the broker the run's API and workers use (rabbitmq: a vhost of the run's own)",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the processes' logs (kept anyway on error)"
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help=f"also replace the current figures in {PAGE.relative_to(config.ROOT)} "
        "(a full run only: no --quick, no --only)",
    )
    args = parser.parse_args(argv)
    if args.write and (args.quick or args.only):
        parser.error("--write records a full run: drop --quick and --only")
    return args


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds through every `finally`: processes stopped, database dropped.
    say("SIGTERM: stopping the run's processes, dropping its database, flushing Redis DB 12")
    raise SystemExit(128 + signum)


def _server_versions() -> tuple[str, str]:
    with psycopg.connect(config.PG_ADMIN_DSN) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    postgres = str(row[0]) if row else "unknown"
    import redis  # noqa: PLC0415 - only for the version

    client = redis.Redis(host=config.REDIS_HOST, port=config.REDIS_PORT)
    try:
        version = str(client.info("server").get("redis_version", "unknown"))
    finally:
        client.close()
    return postgres, version


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    sizes = config.QUICK if args.quick else config.FULL
    selected = args.only or list(BENCHMARKS)
    facts = machine_facts(*_server_versions())
    workdir = Path(tempfile.mkdtemp(prefix="tp-bench-"))
    where = (
        f"RabbitMQ vhost {config.RABBITMQ_VHOST}"
        if args.broker == "rabbitmq"
        else (f"Redis DB {config.REDIS_DB}")
    )
    say(f"database {config.DATABASE}, {where}, logs in {workdir}")
    facts["broker"] = where
    results: list[Result] = []
    failed = False
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(bench_database())
            empty_broker = stack.enter_context(
                bench_rabbitmq() if args.broker == "rabbitmq" else bench_redis()
            )
            standin = stack.enter_context(standin_process(workdir))
            db = stack.enter_context(psycopg.connect(config.PG_DSN, autocommit=True))
            ctx = Context(workdir, standin, empty_broker, db)
            for name in selected:
                title, benchmark = BENCHMARKS[name]
                say(f"== {title}")
                try:
                    rows = benchmark(ctx, sizes)
                    results += rows
                    failed = failed or any(row.verdict == "error" for row in rows)
                except Exception as exc:
                    failed = True
                    traceback.print_exc(file=sys.stderr)
                    results.append(Result(title, "(did not finish)", "-", repr(exc), "-", "error"))
    finally:
        if failed or args.keep_logs:
            say(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    facts["load average at end (1/5/15 min)"] = loadavg()
    facts["wall time of the run"] = f"{time.monotonic() - started:.0f} s"
    command = "bash bench/run" + (" --quick" if args.quick else "")
    if args.broker != "redis":
        command += f" --broker {args.broker}"
    if args.only:
        command += " --only " + " ".join(args.only)
    title = f"tenant-provisioner benchmarks ({'quick smoke run' if args.quick else 'full run'})"
    footer = [f"Command: `{command}`. Method and formulas: docs/benchmarks.md."]
    sys.stdout.write(render(title, facts, results, footer))
    if args.write and not failed:
        page.write(PAGE, facts, results, command + " --write")
        say(f"wrote {PAGE}")
    elif args.write:
        say(f"{PAGE} left as it was: a benchmark did not finish")
    return 1 if failed else 0
