"""Fixtures of the failure drills: brokers of our own that a drill may kill or restart."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis

from tests.conftest import free_port, stop_process, wait_for


@pytest.fixture
def own_redis(tmp_path: Path):
    """A redis-server process of our own (no persistence, like the machine's) we may kill."""
    port = free_port()
    command = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp_path),
    ]

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        client = redis.Redis(port=port)
        wait_for(lambda: _pings(client), what="redis-server to start")
        return process

    handle = {"process": start(), "start": start, "port": port}
    yield handle
    stop_process(handle["process"])


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
