"""Shared by the stand-in's contract tests: a fresh stand-in per test, a client, request helpers.

Helpers are imported from here (``from tests.standin.conftest import ...``), as the rest of the
suite does with ``tests.conftest``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from influxdb3_standin import StandIn

TOKEN = "apiv3_standin-contract-token"
DATABASE_API = "/api/v3/configure/database"
WRITE_API = "/api/v3/write_lp"
QUERY_API = "/api/v3/query_sql"


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with StandIn(token=TOKEN) as server:
        yield server


@pytest.fixture
def client() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        yield session


def create(
    client: requests.Session, standin: StandIn, name: str, **extra: Any
) -> requests.Response:
    return client.post(f"{standin.url}{DATABASE_API}", json={"db": name, **extra}, timeout=5)


def write(
    client: requests.Session, standin: StandIn, database: str, lines: str, precision: str = "s"
) -> requests.Response:
    return client.post(
        f"{standin.url}{WRITE_API}",
        params={"db": database, "precision": precision},
        data=lines.encode(),
        timeout=5,
    )


def query(client: requests.Session, standin: StandIn, database: str, sql: str) -> requests.Response:
    return client.get(
        f"{standin.url}{QUERY_API}",
        params={"db": database, "q": sql, "format": "json"},
        timeout=5,
    )


def assert_text_error(response: requests.Response, status: int, text: str | None = None) -> None:
    assert response.status_code == status
    assert "Content-Type" not in response.headers
    if text is not None:
        assert response.text == text


def assert_json_error(response: requests.Response, status: int, message: str) -> None:
    assert response.status_code == status
    assert "Content-Type" not in response.headers
    assert json.loads(response.text) == {"error": message}
