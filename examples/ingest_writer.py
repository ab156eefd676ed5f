"""An ingest writer: turns device readings into line protocol and writes each tenant's points to
the server that holds its database, found with ``locations_client``.

The pattern for every service that writes (or reads) telemetry:

- resolve the tenant from memory before each write - never a configured default server;
- ``Location``: write to ``location.url``, database ``location.database``;
- ``NotReady`` (provisioning, failed, being deleted) or ``UNKNOWN``: do not write; keep the
  points for later or drop them, as the service decides - a write anywhere else would create a
  stray database there (InfluxDB 3 creates a database on the first write to a name).

This one writes synthetic readings (a demonstration, and the writers drill's writer)::

    python examples/ingest_writer.py --locations http://127.0.0.1:8000 \\
        --locations-token-file secrets/locations_token \\
        --influxdb-token-file secrets/influxdb_token \\
        --tenants acme,globex --points 10 --seconds 30

For each tenant incarnation it first sees ready, it writes ``--points`` points (one request);
then, until ``--seconds`` pass (or ``--stop-file`` appears), one point now and then to a
random tenant it holds as ready. Every point carries the writer's id and the incarnation it was
written for. At the end it prints what it wrote, as JSON:
``{"tenant": {"incarnation": {"url": points}}}``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import requests

from locations_client import Location, LocationClient


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    tenants = _tenants(args.tenants)
    locations_token = Path(args.locations_token_file).read_text().strip()
    influxdb_token = Path(args.influxdb_token_file).read_text().strip()
    written: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {influxdb_token}"

    def write(where: Location, points: int) -> None:
        # Timestamps of our own, one nanosecond apart: points of one series at the same time
        # would overwrite each other.
        start = time.time_ns()
        lines = "\n".join(
            f"telemetry,writer={args.writer},incarnation={where.incarnation} value={i}i {start + i}"
            for i in range(points)
        )
        answer = session.post(
            f"{where.url}/api/v3/write_lp",
            params={"db": where.database, "precision": "ns"},
            data=lines,
            timeout=5,  # per connect and per read: a small batch keeps the whole write well
            # under the deletion wait (LOCATIONS_MAX_STALENESS_SECONDS)
            allow_redirects=False,
        )
        answer.raise_for_status()
        by_url = written[where.tenant_id][str(where.incarnation)]
        by_url[where.url] = by_url.get(where.url, 0) + points

    client = LocationClient(args.locations, locations_token, refresh_seconds=args.refresh)
    client.start(wait=False)
    deadline = time.monotonic() + args.seconds
    rng = random.Random(args.writer)
    stop = Path(args.stop_file) if args.stop_file else None
    while time.monotonic() < deadline and not (stop and stop.exists()):
        ready: list[Location] = []
        for tenant_id in tenants:
            where = client.resolve(tenant_id)
            if not isinstance(where, Location):
                continue  # not ready, unknown, or the map too old (Stale): write nowhere
            ready.append(where)
            if str(where.incarnation) not in written.get(tenant_id, {}):
                write(where, args.points)  # first sight of this incarnation, ready
        for where in rng.sample(ready, min(len(ready), args.trickle)):
            # Resolved again just before writing: a deletion published meanwhile stops it.
            current = client.resolve(where.tenant_id)
            if isinstance(current, Location):
                write(current, 1)
        time.sleep(args.pause)
    client.close()
    if client.last_error:
        print(f"last refresh failed: {client.last_error}", file=sys.stderr)
    json.dump(written, sys.stdout)
    print()
    return 0


def _tenants(spec: str) -> list[str]:
    if spec.startswith("@"):
        return [line.strip() for line in Path(spec[1:]).read_text().splitlines() if line.strip()]
    return [t for t in spec.split(",") if t]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--locations", required=True, help="base URL of the location service")
    parser.add_argument("--locations-token-file", required=True)
    parser.add_argument("--influxdb-token-file", required=True)
    parser.add_argument("--tenants", required=True, help="ids, comma-separated, or @FILE")
    parser.add_argument("--points", type=int, default=10, help="points per incarnation")
    parser.add_argument("--trickle", type=int, default=5, help="single points per round")
    parser.add_argument("--seconds", type=float, default=30.0, help="stop after this long")
    parser.add_argument("--stop-file", help="or stop as soon as this file exists")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between rounds")
    parser.add_argument("--refresh", type=float, default=None, help="refresh interval (s)")
    parser.add_argument("--writer", default="w1", help="this writer's id, a tag on its points")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
