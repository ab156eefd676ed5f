"""Where a benchmark run lives (its database, Redis DB, ports, tokens) and how big it is.

Nothing here imports ``worker``: ``bench.__main__`` applies :data:`BENCH_ENV` to the process
environment before the settings are first read, and every process the run starts inherits it.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from harness.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
__all__ = ["ROOT", "free_port"]
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
REDIS_DB = 12  # ours alone; the test suite uses 11
RABBITMQ_VHOST = f"tp_bench_{secrets.token_hex(4)}"  # `--broker rabbitmq`: a vhost of the run's
DATABASE = f"tp_bench_{secrets.token_hex(4)}"
PG_DSN = f"postgresql://postgres@127.0.0.1:5432/{DATABASE}"
INFLUXDB_TOKEN = "apiv3_bench_" + secrets.token_hex(12)
OPERATOR_TOKEN = "operator-bench-" + secrets.token_hex(12)
LOCATIONS_TOKEN = "locations-bench-" + secrets.token_hex(12)
LIVE_CHECK_TIMEOUT = 2.0
RAISED_DATABASE_LIMIT = 100_000


STANDIN_PORT = free_port()
STANDIN_URL = f"http://127.0.0.1:{STANDIN_PORT}"

# The code's defaults everywhere else (timeouts, backoff, time limits): those are what we measure.
BENCH_ENV = {
    "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}",
    "CELERY_BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
    "INFLUXDB_URL": STANDIN_URL,
    "INFLUXDB_TOKEN": INFLUXDB_TOKEN,
    "INFLUXDB_DATABASE_LIMIT": str(RAISED_DATABASE_LIMIT),
    "OPERATOR_TOKEN": OPERATOR_TOKEN,
    "LOCATIONS_TOKEN": LOCATIONS_TOKEN,
    "LIVE_CHECK_TIMEOUT": f"{LIVE_CHECK_TIMEOUT:g}",
    "LOG_LEVEL": "INFO",
}
# Inherited settings would make a run differ from the documented one.
_INHERITED_PREFIXES = (
    "CELERY_",
    "INFLUXDB_",
    "PROVISION_",
    "RECONCILE_",
    "FLOWER_",
    "LOCATIONS_",
)
_INHERITED_NAMES = ("DATABASE_URL", "OPERATOR_TOKEN", "OPERATOR_TOKEN_FILE", "LIVE_CHECK_TIMEOUT")


def apply_environment(broker: str = "redis") -> None:
    """Make this process (and so every child) use the run's settings only; ``broker``:
    ``redis`` (DB 12) or ``rabbitmq`` (the run's own vhost)."""
    for name in list(os.environ):
        if name.startswith(_INHERITED_PREFIXES) or name in _INHERITED_NAMES:
            del os.environ[name]
    os.environ.update(BENCH_ENV)
    if broker == "rabbitmq":
        from harness.brokers import RabbitMQVhost  # noqa: PLC0415 - only for this broker

        os.environ["CELERY_BROKER_URL"] = RabbitMQVhost(RABBITMQ_VHOST).url


@dataclass(frozen=True)
class Sizes:
    """How many requests, tenants and tasks each benchmark uses."""

    latency_requests: int  # per approach and InfluxDB condition
    latency_inline_slow_requests: int  # the inline approach at 200 ms latency
    latency_inline_blackholed_requests: int  # each of these waits out the 10 s timeout
    latency_warmup_requests: int
    onboarding_tenants: int
    onboarding_pools: tuple[tuple[str, int], ...]  # (Celery pool kind, concurrency) per case
    reconcile_tenants: tuple[int, ...]
    reconcile_runs: int  # per size; the table shows the median
    stats_healthy_requests: int
    stats_hanging_requests: int  # each of these waits out LIVE_CHECK_TIMEOUT
    memory_tasks: int
    pool_tenants: int  # the node pool: tenants over
    pool_nodes: int  # ... this many stand-in nodes
    pool_node_limit: int  # ... each holding at most this many databases
    console_tenants: int  # the console's tenants page over this many tenants
    console_requests: int  # per page measured (and scrapes of /metrics)
    metrics_attempt_rows: int  # the attempt log under /metrics
    isolation_requests: int  # stats of healthy-server tenants, per case
    placement_fleets: tuple[int, ...]  # placed tenants under the timed placements
    placement_requests: int  # placements timed per fleet size
    placement_concurrent_per_placer: int  # tenants each of the 8 placers places
    adoption_servers: int  # the upgrade's servers, each holding ...
    adoption_per_server: int  # ... this many of the UI's tenants' databases
    fleet_reconciles: tuple[tuple[int, int], ...]  # (servers, tenants on each) per fleet
    location_maps: tuple[int, ...]  # tenants in the location map, per case
    location_resolves: int  # resolve() calls timed in the client
    location_since_calls: int  # `since` calls timed, each after 1,000 changes
    location_clients: int  # concurrent clients polling the API ...
    location_client_seconds: float  # ... for this long
    events_tenants: int  # provisioned per run of events on / off (four runs)
    events_clients: int  # SSE clients on one API process ...
    events_stream_events: int  # ... each receiving this many events
    events_webhooks: int  # events delivered to one webhook receiver
    profile_tenants: int  # provisioned while py-spy samples the worker
    ready_tenants: int  # time to ready: tenants created one after another, per latency


FULL = Sizes(
    latency_requests=1000,
    latency_inline_slow_requests=1000,
    latency_inline_blackholed_requests=20,
    latency_warmup_requests=20,
    onboarding_tenants=10_000,
    onboarding_pools=(("prefork", 4), ("prefork", 8), ("threads", 16), ("threads", 32)),
    reconcile_tenants=(1_000, 10_000, 100_000),
    reconcile_runs=3,
    stats_healthy_requests=1000,
    stats_hanging_requests=25,
    memory_tasks=10_000,
    pool_tenants=10_000,
    pool_nodes=100,
    pool_node_limit=100,
    console_tenants=100_000,
    console_requests=500,
    metrics_attempt_rows=1_000_000,
    isolation_requests=500,
    placement_fleets=(1_000, 100_000, 1_000_000),
    placement_requests=500,
    placement_concurrent_per_placer=250,
    adoption_servers=100,
    adoption_per_server=1000,
    fleet_reconciles=((100, 1000), (1000, 1000)),
    location_maps=(1_000, 1_000_000),
    location_resolves=200_000,
    location_since_calls=20,
    location_clients=200,
    location_client_seconds=20.0,
    events_tenants=2000,
    events_clients=100,
    events_stream_events=300,
    events_webhooks=5000,
    profile_tenants=2000,
    ready_tenants=200,
)

QUICK = Sizes(
    latency_requests=20,
    latency_inline_slow_requests=10,
    latency_inline_blackholed_requests=1,
    latency_warmup_requests=5,
    onboarding_tenants=80,
    onboarding_pools=(("prefork", 4), ("threads", 16)),
    reconcile_tenants=(1_000, 5_000),
    reconcile_runs=1,
    stats_healthy_requests=50,
    stats_hanging_requests=1,
    memory_tasks=200,
    pool_tenants=200,
    pool_nodes=10,
    pool_node_limit=20,
    console_tenants=2_000,
    console_requests=20,
    metrics_attempt_rows=20_000,
    isolation_requests=30,
    placement_fleets=(1_000, 10_000),
    placement_requests=50,
    placement_concurrent_per_placer=20,
    adoption_servers=10,
    adoption_per_server=100,
    fleet_reconciles=((10, 100), (50, 100)),
    location_maps=(1_000, 20_000),
    location_resolves=20_000,
    location_since_calls=5,
    location_clients=20,
    location_client_seconds=5.0,
    events_tenants=100,
    events_clients=10,
    events_stream_events=20,
    events_webhooks=200,
    profile_tenants=100,
    ready_tenants=20,
)
