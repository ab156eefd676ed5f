"""Fixtures of the security suite: a real operator API process on a Postgres database and a
Redis DB number of its own, so what the fuzzer creates never lands where other tests look.

The fuzz's Redis DB is ``TEST_FUZZ_REDIS_DB`` (default 15; 14 when the run's own
``TEST_REDIS_DB`` is 15): emptied before and after, like the run's own (``broker``). No worker
consumes it: a create answers 201 once the broker took the message, and the messages are
dropped with the DB.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from harness import databases, processes
from tests.conftest import LOCATIONS_TOKEN, OPERATOR_TOKEN, REDIS_DB, REDIS_HOST, REDIS_PORT

FUZZ_DATABASE = f"tp_fuzz_{os.getpid()}_{secrets.token_hex(3)}"
FUZZ_REDIS_DB = int(os.environ.get("TEST_FUZZ_REDIS_DB", "14" if REDIS_DB == 15 else "15"))
# Variables the API must not inherit from the developer's shell or the run: the fuzz decides.
_NOT_INHERITED = ("METRICS_TOKEN", "METRICS_TOKEN_FILE", "API_BEHIND_TLS")


@dataclass(frozen=True)
class FuzzedAPI:
    """The API under fuzz: its base URL, its tokens, its log."""

    url: str
    operator_token: str
    locations_token: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="session")
def fuzz_database() -> Iterator[str]:
    """A Postgres database of the fuzz's own, migrated to head; dropped afterwards."""
    if FUZZ_REDIS_DB == REDIS_DB:
        pytest.fail(f"TEST_FUZZ_REDIS_DB must differ from TEST_REDIS_DB ({REDIS_DB})")
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{FUZZ_DATABASE}"
    databases.create(FUZZ_DATABASE)
    try:
        databases.migrate({**os.environ, "DATABASE_URL": url})
        yield url
    finally:
        databases.drop(FUZZ_DATABASE)


@pytest.fixture(scope="session")
def fuzz_broker() -> Iterator[str]:
    """The fuzz's own Redis DB, emptied before and after; its broker URL."""
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=FUZZ_REDIS_DB)
    client.flushdb()
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{FUZZ_REDIS_DB}"
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def fuzzed_api(
    fuzz_database: str, fuzz_broker: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzedAPI]:
    """A real ``python -m api_hooks`` process, started as the integration tests start theirs
    (the run's TEST_ENV), on the fuzz's database and broker; /metrics takes the operator
    token (METRICS_TOKEN unset), /locations the run's LOCATIONS_TOKEN."""
    assert len(OPERATOR_TOKEN) >= 32 and len(LOCATIONS_TOKEN) >= 32
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    env.update(
        DATABASE_URL=fuzz_database,
        CELERY_BROKER_URL=fuzz_broker,
        OPERATOR_TOKEN=OPERATOR_TOKEN,
        LOCATIONS_TOKEN=LOCATIONS_TOKEN,
    )
    log_path = tmp_path_factory.mktemp("fuzz") / "api.log"
    port = processes.free_port()
    try:
        process = processes.start_api(log_path, port, env)
    except (RuntimeError, TimeoutError) as exc:
        pytest.fail(f"the API did not start ({exc}):\n{log_path.read_text(errors='replace')}")
    try:
        yield FuzzedAPI(f"http://127.0.0.1:{port}", OPERATOR_TOKEN, LOCATIONS_TOKEN, log_path)
    finally:
        processes.stop(process)


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print a line of what the suite saw to the terminal, even when output is captured."""

    def say(line: str) -> None:
        with capsys.disabled():
            print(f"    [security] {line}")

    return say
