"""Run the InfluxDB 3 Core stand-in as a process: ``python -m influxdb3_standin``.

A stand-in for InfluxDB 3 Core following ../shared/influxdb3-api.md, for tests and local runs.
It is NOT InfluxDB: everything is kept in memory. Production uses the influxdb:3-core image.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from influxdb3_standin.server import StandIn

DESCRIPTION = """\
A stand-in for the InfluxDB 3 Core HTTP API, following ../shared/influxdb3-api.md, for tests and
local runs because InfluxDB 3 cannot be installed here. It is NOT InfluxDB: data lives in memory
and is lost on exit, and only the contract's endpoints and a few SQL shapes are implemented.
Production (and docker-compose.yml) uses the real influxdb:3-core image.

Fault switches for out-of-process use (no auth): GET /_standin/state, POST /_standin/reset and
POST /_standin/switches with JSON keys latency, error_rate, hang_rate, reset_rate, seed, hang,
database_limit, outage_seconds.
"""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m influxdb3_standin",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8181, help="port (0: pick a free one)")
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token", help="require this admin token (Bearer/Token auth)")
    token.add_argument("--token-file", type=Path, help="read the admin token from this file")
    parser.add_argument(
        "--database-limit", type=int, default=5, help="databases per server (Core: 5)"
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds to wait before every answer"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    token: str | None = args.token
    if args.token_file is not None:
        token = args.token_file.read_text().strip()
        if not token:
            sys.stderr.write(f"{args.token_file} is empty\n")
            return 2
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s influxdb3-standin %(levelname)s %(message)s",
    )

    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    standin = StandIn(args.host, args.port, token=token, database_limit=args.database_limit)
    standin.set_latency(args.latency)
    standin.start()
    try:
        sys.stdout.write(f"influxdb3-standin listening on {standin.url}\n")
        sys.stdout.flush()
        while not stopping.wait(1.0):
            pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
