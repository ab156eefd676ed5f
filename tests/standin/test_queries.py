"""The SQL shapes the stand-in answers, and its errors for the ones it does not."""

from __future__ import annotations

import time

import pytest
import requests

from influxdb3_standin import StandIn
from tests.standin.conftest import QUERY_API, assert_json_error, assert_text_error, query, write


@pytest.fixture
def telemetry(standin: StandIn, client: requests.Session) -> str:
    lines = "\n".join(f"telemetry,device=d{i} temp={20 + i} {1_700_000_000 + i}" for i in range(3))
    assert write(client, standin, "acme", lines).status_code == 204
    return "acme"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ('SELECT COUNT(*) AS count FROM "telemetry"', [{"count": 3}]),
        ("select count(*) as Total from telemetry;", [{"total": 3}]),
        ('SELECT COUNT(*) AS "Total" FROM telemetry', [{"Total": 3}]),
        ("SELECT COUNT(*) FROM telemetry", [{"count(*)": 3}]),
        ("SELECT * FROM telemetry LIMIT 0", []),
    ],
)
def test_count_queries(
    standin: StandIn, client: requests.Session, telemetry: str, sql: str, expected: object
) -> None:
    response = query(client, standin, telemetry, sql)
    assert response.status_code == 200
    assert response.json() == expected


def test_select_star_returns_tags_fields_and_iso_time(
    standin: StandIn, client: requests.Session, telemetry: str
) -> None:
    response = query(client, standin, telemetry, 'SELECT * FROM "telemetry" LIMIT 2')

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == [
        {"device": "d0", "temp": 20.0, "time": "2023-11-14T22:13:20"},
        {"device": "d1", "temp": 21.0, "time": "2023-11-14T22:13:21"},
    ]
    everything = query(client, standin, telemetry, "SELECT * FROM telemetry")
    assert len(everything.json()) == 3


def test_query_by_post_json(standin: StandIn, client: requests.Session, telemetry: str) -> None:
    response = client.post(
        f"{standin.url}{QUERY_API}",
        json={"db": telemetry, "q": "SELECT COUNT(*) AS n FROM telemetry", "format": "json"},
        timeout=5,
    )
    assert response.json() == [{"n": 3}]


def test_unquoted_table_names_are_lowercased(standin: StandIn, client: requests.Session) -> None:
    write(client, standin, "acme", "Telemetry v=1 1700000000")

    assert query(client, standin, "acme", 'SELECT * FROM "Telemetry"').status_code == 200
    missing = query(client, standin, "acme", "SELECT * FROM Telemetry")
    assert_text_error(missing, 400, "Error during planning: table 'public.iox.telemetry' not found")


def test_query_on_missing_database_is_404_json(standin: StandIn, client: requests.Session) -> None:
    response = query(client, standin, "ghost", "SELECT * FROM telemetry")
    assert_json_error(response, 404, "query error: database not found: ghost")


def test_unsupported_sql_is_400_text_naming_the_stand_in(
    standin: StandIn, client: requests.Session, telemetry: str
) -> None:
    response = query(client, standin, telemetry, "SELECT temp FROM telemetry WHERE temp > 1")
    assert_text_error(response, 400)
    assert "stand-in does not support" in response.text


COLUMNS_SQL = (
    "SELECT column_name FROM information_schema.columns "
    "WHERE table_schema = 'iox' AND table_name = '{}'"
)


def test_the_columns_of_a_table_from_information_schema(
    standin: StandIn, client: requests.Session, telemetry: str
) -> None:
    response = query(client, standin, telemetry, COLUMNS_SQL.format("telemetry"))
    assert response.status_code == 200
    assert response.json() == [
        {"column_name": "device"},
        {"column_name": "temp"},
        {"column_name": "time"},
    ]
    # a table that is not there has no columns, and no error either
    assert query(client, standin, telemetry, COLUMNS_SQL.format("nothing")).json() == []


def test_a_retention_period_hides_older_points_from_queries_not_from_the_schema(
    standin: StandIn, client: requests.Session
) -> None:
    # Given a database keeping 1 h of data, with a point from 2 h ago and one from now
    created = client.post(
        f"{standin.url}/api/v3/configure/database",
        json={"db": "short", "retention_period": "1h"},
        timeout=5,
    )
    assert created.status_code == 200
    now = int(time.time())
    lines = f"m,k=old old=1i {now - 7200}\nm,k=new new=1i {now}"
    assert write(client, standin, "short", lines).status_code == 204

    # Then a query shows only the recent point, the schema both columns, storage both points
    assert query(client, standin, "short", "SELECT COUNT(*) AS n FROM m").json() == [{"n": 1}]
    assert [row["k"] for row in query(client, standin, "short", "SELECT * FROM m").json()] == [
        "new"
    ]
    columns = query(client, standin, "short", COLUMNS_SQL.format("m")).json()
    assert [c["column_name"] for c in columns] == ["k", "new", "old", "time"]
    assert len(standin.rows("short", "m")) == 2
