"""Benchmark 13: the location service and its client.

For each map size (1,000 and 1,000,000 tenants, bulk-inserted provisioned on the run's server,
their locations published as migration 0008 does): a new client process loads the
whole map through the API (wall time, and the process's peak resident memory above what it had
before the load), then times ``resolve`` on random ids (each call timed alone with
``perf_counter_ns``, so a few tens of nanoseconds of timer are included). Then ``since`` calls,
each after 1,000 tenants changed state (the call publishes them and reads them). At the largest
size, 200 clients (4 processes of 50 threads) poll ``since`` at their own version every 2 s
(the default refresh), starting at random moments, while 100 tenants change every second;
every answer's latency is kept.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import psycopg
import requests

from bench import config
from bench.config import Sizes
from bench.harness import Context, http_server, say
from bench.measure import Result, fmt_seconds, percentile, verdict

BENCHMARK = "13 · locations"
CHANGES = 1000
CLIENT_PROCESSES = 4
REFRESH = 2.0  # the clients' default refresh interval (LOCATIONS_REFRESH_SECONDS)
AUTH = {"Authorization": f"Bearer {config.LOCATIONS_TOKEN}"}

# Runs in a new process: the client as a writer would hold it, nothing else loaded.
_LOAD = """
import json, random, resource, sys, time
from locations_client import LocationClient, Location
url, token, resolves = sys.argv[1], sys.argv[2], int(sys.argv[3])
def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
before = rss_kb()
started = time.perf_counter()
client = LocationClient(url, token, page_size=10000)
client.refresh()
seconds = time.perf_counter() - started
peak = rss_kb() - before
ids = [key for key in client._map._entries]
rng = random.Random(1)
sample = [rng.choice(ids) for _ in range(resolves)]
timer = time.perf_counter_ns
ns = []
ready = 0
for tenant_id in sample:
    t0 = timer(); where = client.resolve(tenant_id); ns.append(timer() - t0)
    ready += isinstance(where, Location)
print(json.dumps({"seconds": seconds, "peak_mb": peak / 1024, "tenants": len(ids),
                  "ns": ns, "ready": ready}))
"""


def run(ctx: Context, sizes: Sizes) -> list[Result]:
    results: list[Result] = []
    since_p99: dict[int, float] = {}
    for size in sizes.location_maps:
        _fill(ctx, size)
        with http_server("api_hooks", ctx.workdir) as api:
            results += _load_and_resolve(api, size, sizes)
            row, since_p99[size] = _since(ctx, api, size, sizes)
            results.append(row)
            if size == max(sizes.location_maps):
                results.append(_concurrent(ctx, api, size, sizes))
    smallest, largest = min(since_p99), max(since_p99)
    results.append(
        Result(
            BENCHMARK,
            f"`since` flat with the map: {largest:,} vs {smallest:,} tenants",
            "-",
            f"p99 {fmt_seconds(since_p99[largest])} vs {fmt_seconds(since_p99[smallest])}",
            "within 2x",
            verdict(since_p99[largest] <= 2 * since_p99[smallest] + 0.002),
        )
    )
    return results


def _fill(ctx: Context, size: int) -> None:
    ctx.fresh_state()
    say(f"locations: {size:,} provisioned tenants")
    ctx.insert_placed(
        "INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_node) "
        "SELECT 'loc-' || lpad(i::text, 7, '0'), 'Located', 'provisioned', 'default' "
        "FROM generate_series(1, %s) AS i",
        (size,),
    )


def _load_and_resolve(api: str, size: int, sizes: Sizes) -> list[Result]:
    loaded = subprocess.run(
        [sys.executable, "-c", _LOAD, api, config.LOCATIONS_TOKEN, str(sizes.location_resolves)],
        cwd=config.ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    answer: dict[str, Any] = json.loads(loaded.stdout)
    ns = answer["ns"]
    say(
        f"locations: {answer['tenants']:,} loaded in {answer['seconds']:.2f} s, "
        f"peak +{answer['peak_mb']:.0f} MB; resolve p99 {percentile(ns, 99) / 1000:.2f} µs"
    )
    complete = answer["tenants"] == size and answer["ready"] == len(ns)
    rows = [
        Result(
            BENCHMARK,
            f"resolve in the client, map of {size:,}",
            f"{len(ns):,}",
            f"p50 {percentile(ns, 50) / 1000:.2f} µs · p99 {percentile(ns, 99) / 1000:.2f} µs · "
            f"max {max(ns) / 1000:.1f} µs",
            "p99 < 5 µs",
            verdict(complete and percentile(ns, 99) < 5000),
        )
    ]
    if size == max(sizes.location_maps):
        rows.append(
            Result(
                BENCHMARK,
                f"full map of {size:,} loaded by a new client",
                "1",
                f"{answer['seconds']:.2f} s · peak memory +{answer['peak_mb']:.0f} MB",
                "< 5 s, < 300 MB",
                verdict(complete and answer["seconds"] < 5 and answer["peak_mb"] < 300),
            )
        )
    return rows


def _version(session: requests.Session, api: str, since: int = 0) -> int:
    answer = session.get(f"{api}/locations", params={"since": since, "limit": 1}, timeout=30)
    answer.raise_for_status()
    return int(answer.json()["version"])


def _since(ctx: Context, api: str, size: int, sizes: Sizes) -> tuple[Result, float]:
    session = requests.Session()
    session.headers.update(AUTH)
    version = _version(session, api)
    session.get(f"{api}/locations", params={"since": version}, timeout=30)  # a warm connection
    seconds: list[float] = []
    wrong = 0
    for call in range(sizes.location_since_calls):
        # Every pass over the map flips the state, so each of the 1,000 is a change.
        state = "provisioning" if (call * CHANGES // size) % 2 == 0 else "provisioned"
        ctx.db.execute(
            "UPDATE tenants SET influxdb_state = %s WHERE tenant_id IN "
            "(SELECT 'loc-' || lpad(i::text, 7, '0') FROM generate_series(%s::int, %s::int) AS i)",
            (state, 1 + call * CHANGES % size, call * CHANGES % size + CHANGES),
        )
        started = time.perf_counter()
        answer = session.get(
            f"{api}/locations", params={"since": version, "limit": 10_000}, timeout=30
        )
        seconds.append(time.perf_counter() - started)
        body = answer.json()
        wrong += answer.status_code != 200 or len(body["locations"]) != min(CHANGES, size)
        version = body["next_since"]
    p99 = percentile(seconds, 99)
    say(
        f"locations: since at {size:,}: p50 {fmt_seconds(percentile(seconds, 50))}, p99 "
        f"{fmt_seconds(p99)}"
    )
    return (
        Result(
            BENCHMARK,
            f"`since` with {CHANGES:,} changes, map of {size:,}",
            f"{len(seconds)}",
            f"p50 {fmt_seconds(percentile(seconds, 50))} · p99 {fmt_seconds(p99)}"
            + (f" · {wrong} wrong answers" if wrong else ""),
            "p99 < 50 ms",
            verdict(wrong == 0 and p99 < 0.050),
        ),
        p99,
    )


def _poll(api: str, threads: int, seconds: float) -> list[float]:
    """In a process of its own: ``threads`` clients polling ``since`` at their version."""
    latencies: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        session = requests.Session()
        session.headers.update(AUTH)
        version = _version(session, api)
        deadline = time.monotonic() + seconds
        mine = []
        time.sleep(random.uniform(0, REFRESH))  # clients do not start in step
        while time.monotonic() < deadline:
            started = time.perf_counter()
            answer = session.get(f"{api}/locations", params={"since": version}, timeout=30)
            mine.append(time.perf_counter() - started)
            version = answer.json()["next_since"]
            time.sleep(REFRESH)
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=client) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return latencies


def _concurrent(ctx: Context, api: str, size: int, sizes: Sizes) -> Result:
    clients, seconds = sizes.location_clients, sizes.location_client_seconds
    say(
        f"locations: {clients} clients polling every {REFRESH:g} s for {seconds:.0f} s, "
        "100 changes/s"
    )
    stop = threading.Event()
    changing = psycopg.connect(config.PG_DSN, autocommit=True)  # the changer thread's own

    def change() -> None:
        rounds = 0
        while not stop.wait(0.1):  # 10 tenants 10 times a second
            first = 1 + (rounds * 10) % size
            state = "provisioning" if rounds % 2 else "provisioned"
            changing.execute(
                "UPDATE tenants SET influxdb_state = %s WHERE tenant_id IN (SELECT 'loc-' || "
                "lpad(i::text, 7, '0') FROM generate_series(%s::int, %s::int) AS i)",
                (state, first, first + 9),
            )
            rounds += 1

    changer = threading.Thread(target=change)
    changer.start()
    try:
        per_process = clients // CLIENT_PROCESSES
        with ProcessPoolExecutor(CLIENT_PROCESSES) as processes:
            parts = processes.map(
                _poll,
                [api] * CLIENT_PROCESSES,
                [per_process] * CLIENT_PROCESSES,
                [seconds] * CLIENT_PROCESSES,
            )
            latencies = [latency for part in parts for latency in part]
    finally:
        stop.set()
        changer.join()
        changing.close()
    return Result(
        BENCHMARK,
        f"location API, {clients} clients polling `since` every {REFRESH:g} s, map of {size:,}",
        f"{len(latencies):,}",
        f"p50 {fmt_seconds(percentile(latencies, 50))} · p99 "
        f"{fmt_seconds(percentile(latencies, 99))} · "
        f"{len(latencies) / seconds:.0f} answers/s",
        "p99 reported",
        "n/a",
    )
