"""The InfluxDB 3 Core stand-in keeps the contract in ../shared/influxdb3-api.md, over real HTTP.

Every test starts its own stand-in on a free port, so the tests share nothing. Error bodies are
checked byte for byte where the contract gives them, including the missing Content-Type.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from influxdb3_standin import StandIn

TOKEN = "apiv3_standin-contract-token"
ROOT = Path(__file__).resolve().parent.parent
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


# ---- health, ping, routing --------------------------------------------------------------------


def test_health_and_ping_answer_when_authenticated(
    standin: StandIn, client: requests.Session
) -> None:
    health = client.get(f"{standin.url}/health", timeout=5)
    assert (health.status_code, health.text) == (200, "OK")

    ping = client.get(f"{standin.url}/ping", timeout=5)
    assert ping.status_code == 200
    body = ping.json()
    assert body["product_name"] == "InfluxDB 3 Core"
    assert set(body) == {"product_name", "version", "revision", "process_id"}


def test_unknown_path_is_404(standin: StandIn, client: requests.Session) -> None:
    assert_text_error(client.get(f"{standin.url}/api/v3/nothing", timeout=5), 404)


# ---- auth -------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "Token"])
def test_both_token_schemes_are_accepted(standin: StandIn, scheme: str) -> None:
    response = requests.get(
        f"{standin.url}/health", headers={"Authorization": f"{scheme} {TOKEN}"}, timeout=5
    )
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/health", "/ping", DATABASE_API + "?format=json"])
def test_missing_or_wrong_token_is_401_on_every_path(standin: StandIn, path: str) -> None:
    missing = requests.get(f"{standin.url}{path}", timeout=5)
    assert_json_error(missing, 401, "the request was not authenticated")

    wrong = requests.get(
        f"{standin.url}{path}", headers={"Authorization": "Bearer not-the-token"}, timeout=5
    )
    assert_json_error(wrong, 401, "the request was not authenticated")


@pytest.mark.parametrize("header", ["Bearer", "Foo " + TOKEN, "Bearer a b", ""])
def test_malformed_authorization_header_is_400_naming_the_schemes(
    standin: StandIn, header: str
) -> None:
    response = requests.get(f"{standin.url}/health", headers={"Authorization": header}, timeout=5)
    assert response.status_code == 400
    assert "Content-Type" not in response.headers
    error = json.loads(response.text)["error"]
    assert "Bearer" in error and "Token" in error


def test_without_a_token_there_is_no_auth(standin: StandIn) -> None:
    standin.set_token(None)
    assert requests.get(f"{standin.url}/health", timeout=5).status_code == 200
    standin.set_token(TOKEN)
    assert requests.get(f"{standin.url}/health", timeout=5).status_code == 401


# ---- create / list / delete databases ---------------------------------------------------------


def test_create_answers_200_then_409_for_the_same_name(
    standin: StandIn, client: requests.Session
) -> None:
    created = create(client, standin, "telemetry_acme", retention_period="30d")
    assert (created.status_code, created.content) == (200, b"")

    again = create(client, standin, "telemetry_acme")
    assert_text_error(again, 409, "attempted to create a resource that already exists")
    assert standin.databases() == ["telemetry_acme"]
    assert standin.create_calls("telemetry_acme") == 2


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "db name cannot be empty"),
        ("_acme", "db name did not start with a number or letter"),
        (
            "acme.prod",
            "invalid character in database or rp name: must be ASCII, "
            "containing only letters, numbers, underscores, or hyphens",
        ),
        (
            "acmé",
            "invalid character in database or rp name: must be ASCII, "
            "containing only letters, numbers, underscores, or hyphens",
        ),
        ("a" * 512, "db name too long: max 511"),
    ],
)
def test_invalid_names_are_400_json(
    standin: StandIn, client: requests.Session, name: str, message: str
) -> None:
    assert_json_error(create(client, standin, name), 400, message)
    assert standin.databases() == []


def test_longest_valid_name_is_accepted(standin: StandIn, client: requests.Session) -> None:
    assert create(client, standin, "9" + "a-_" * 170).status_code == 200


def test_create_requires_json_content_type(standin: StandIn, client: requests.Session) -> None:
    response = client.post(
        f"{standin.url}{DATABASE_API}",
        data='{"db": "acme"}',
        headers={"Content-Type": "text/plain"},
        timeout=5,
    )
    assert_text_error(response, 415, "unacceptable content-type, expected: application/json")


@pytest.mark.parametrize("body", ['{"db": ', '["acme"]', '{"name": "acme"}', '{"db": 5}'])
def test_bad_json_is_400_serde_text(standin: StandIn, client: requests.Session, body: str) -> None:
    response = client.post(
        f"{standin.url}{DATABASE_API}",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert_text_error(response, 400)
    assert response.text.startswith("serde json error: ")


@pytest.mark.parametrize("period", ["30d", "12h", "1w", "3mo", "1y", "0d", "none"])
def test_retention_period_forms_are_accepted(
    standin: StandIn, client: requests.Session, period: str
) -> None:
    assert create(client, standin, "acme", retention_period=period).status_code == 200


@pytest.mark.parametrize("period", ["30x", "soon", "", 30, "90m", "45s", "1d12h", "1h 30m", " 30d"])
def test_bad_retention_period_is_400_serde_text(
    standin: StandIn, client: requests.Session, period: object
) -> None:
    response = create(client, standin, "acme", retention_period=period)
    assert_text_error(response, 400)
    assert response.text.startswith("serde json error: ")
    assert standin.databases() == []


def test_list_is_sorted_and_always_has_internal(standin: StandIn, client: requests.Session) -> None:
    for name in ("telemetry_b", "telemetry_a"):
        create(client, standin, name)

    listed = client.get(f"{standin.url}{DATABASE_API}", params={"format": "json"}, timeout=5)

    assert listed.status_code == 200
    assert listed.json() == [
        {"iox::database": "_internal"},
        {"iox::database": "telemetry_a"},
        {"iox::database": "telemetry_b"},
    ]


def test_list_without_format_is_400_text(standin: StandIn, client: requests.Session) -> None:
    assert_text_error(client.get(f"{standin.url}{DATABASE_API}", timeout=5), 400)


def test_delete_renames_the_database_and_frees_the_name(
    standin: StandIn, client: requests.Session
) -> None:
    create(client, standin, "acme")

    deleted = client.delete(f"{standin.url}{DATABASE_API}", params={"db": "acme"}, timeout=5)

    assert (deleted.status_code, deleted.content) == (200, b"")
    assert standin.databases() == []
    deleted_names = standin.state()["deleted_databases"]
    assert isinstance(deleted_names, list) and len(deleted_names) == 1
    assert re.fullmatch(r"acme-\d{8}T\d{6}", deleted_names[0])
    assert create(client, standin, "acme").status_code == 200


@pytest.mark.parametrize("when", ["now", "never", "default", "2030-01-01T00:00:00Z"])
def test_delete_accepts_hard_delete_at(
    standin: StandIn, client: requests.Session, when: str
) -> None:
    create(client, standin, "acme")
    response = client.delete(
        f"{standin.url}{DATABASE_API}", params={"db": "acme", "hard_delete_at": when}, timeout=5
    )
    assert response.status_code == 200


def test_delete_of_unknown_database_is_404_text(standin: StandIn, client: requests.Session) -> None:
    response = client.delete(f"{standin.url}{DATABASE_API}", params={"db": "ghost"}, timeout=5)
    assert_text_error(response, 404, "the requested resource was not found: ghost")


# ---- the database limit -----------------------------------------------------------------------


def test_sixth_database_is_422_and_internal_is_not_counted(
    standin: StandIn, client: requests.Session
) -> None:
    # Given a Core server holding five databases (plus _internal)
    for index in range(5):
        assert create(client, standin, f"tenant_{index}").status_code == 200

    # When a sixth is created, Then the limit answers 422 JSON
    sixth = create(client, standin, "tenant_5")
    assert_json_error(sixth, 422, "Adding a new database would exceed limit of 5 databases")

    # And an existing name still answers 409 on the full server: existence is checked first
    assert create(client, standin, "tenant_0").status_code == 409

    # And a write to a new database cannot take a slot either
    written = write(client, standin, "tenant_6", "cpu v=1 1700000000")
    assert_json_error(written, 422, "Adding a new database would exceed limit of 5 databases")
    assert len(standin.databases()) == 5


def test_soft_deleted_databases_free_their_slot(standin: StandIn, client: requests.Session) -> None:
    for index in range(5):
        create(client, standin, f"tenant_{index}")
    client.delete(f"{standin.url}{DATABASE_API}", params={"db": "tenant_0"}, timeout=5)

    assert create(client, standin, "tenant_5").status_code == 200
    assert create(client, standin, "tenant_6").status_code == 422


def test_limit_counts_databases_made_behind_the_workers_back(
    standin: StandIn, client: requests.Session
) -> None:
    standin.set_database_limit(2)
    standin.create_database("by_hand")
    assert create(client, standin, "tenant_a").status_code == 200
    assert_json_error(
        create(client, standin, "tenant_b"),
        422,
        "Adding a new database would exceed limit of 2 databases",
    )

    standin.delete_database("by_hand")
    assert create(client, standin, "tenant_b").status_code == 200
    with pytest.raises(ValueError, match="exceed limit"):
        standin.create_database("one_too_many")
    with pytest.raises(KeyError):
        standin.delete_database("by_hand")


# ---- writes -----------------------------------------------------------------------------------


def test_write_creates_the_database_and_answers_204(
    standin: StandIn, client: requests.Session
) -> None:
    response = write(client, standin, "acme", 'telemetry,device=d1 temp=21.5,ok=true,n=3i,s="x y"')

    assert (response.status_code, response.content) == (204, b"")
    assert standin.databases() == ["acme"]
    assert standin.create_calls() == 0
    (row,) = standin.rows("acme", "telemetry")
    assert {key: row[key] for key in ("device", "temp", "ok", "n", "s")} == {
        "device": "d1",
        "temp": 21.5,
        "ok": True,
        "n": 3,
        "s": "x y",
    }


def test_same_series_and_time_overwrite_and_merge_fields(
    standin: StandIn, client: requests.Session
) -> None:
    write(client, standin, "acme", "cpu,host=a usage=1i 1700000000")
    write(client, standin, "acme", "cpu,host=a idle=9i 1700000000")
    write(client, standin, "acme", "cpu,host=a usage=5i 1700000000")
    write(client, standin, "acme", "cpu,host=b usage=7i 1700000000")

    assert standin.rows("acme", "cpu") == [
        {"host": "a", "idle": 9, "usage": 5, "time": "2023-11-14T22:13:20"},
        {"host": "b", "usage": 7, "time": "2023-11-14T22:13:20"},
    ]


@pytest.mark.parametrize(
    ("precision", "timestamp", "expected"),
    [
        ("s", "1700000000", "2023-11-14T22:13:20"),
        ("ms", "1700000000123", "2023-11-14T22:13:20.123"),
        ("us", "1700000000000001", "2023-11-14T22:13:20.000001"),
        ("ns", "1700000000000000001", "2023-11-14T22:13:20.000000001"),
        ("auto", "1700000000", "2023-11-14T22:13:20"),
        ("auto", "1700000000000", "2023-11-14T22:13:20"),
    ],
)
def test_write_precision(
    standin: StandIn, client: requests.Session, precision: str, timestamp: str, expected: str
) -> None:
    assert write(client, standin, "acme", f"m v=1 {timestamp}", precision).status_code == 204
    assert standin.rows("acme", "m")[0]["time"] == expected


def test_partial_write_is_400_json_and_keeps_the_good_lines(
    standin: StandIn, client: requests.Session
) -> None:
    lines = "cpu,host=a v=1 1700000000\ncpu,host=b v= 1700000000\ncpu,host=c v=3 1700000000"

    response = write(client, standin, "acme", lines)

    assert response.status_code == 400
    assert "Content-Type" not in response.headers
    body = json.loads(response.text)
    assert body["error"] == "partial write of line protocol occurred"
    (bad,) = body["data"]
    assert bad["line_number"] == 2
    assert bad["original_line"] == "cpu,host=b v= 1700000000"
    assert isinstance(bad["error_message"], str)
    assert [row["host"] for row in standin.rows("acme", "cpu")] == ["a", "c"]


def test_all_lines_bad_is_the_same_400_shape(standin: StandIn, client: requests.Session) -> None:
    response = write(client, standin, "acme", "nofields\ncpu v=notanumber")

    assert response.status_code == 400
    body = json.loads(response.text)
    assert body["error"] == "partial write of line protocol occurred"
    assert [line["line_number"] for line in body["data"]] == [1, 2]


def test_conflicting_field_type_is_a_bad_line(standin: StandIn, client: requests.Session) -> None:
    write(client, standin, "acme", "cpu v=1i 1700000000")
    response = write(client, standin, "acme", "cpu v=1.5 1700000001")
    assert response.status_code == 400
    assert json.loads(response.text)["data"][0]["line_number"] == 1


def test_empty_write_is_400_text(standin: StandIn, client: requests.Session) -> None:
    assert_text_error(write(client, standin, "acme", ""), 400, "incoming write was empty")
    assert standin.databases() == []


def test_write_over_10_mib_is_413(standin: StandIn, client: requests.Session) -> None:
    response = write(client, standin, "acme", "x" * (10 * 1024 * 1024 + 1))
    assert_text_error(response, 413)
    # The connection is still usable afterwards (the body was drained).
    assert client.get(f"{standin.url}/health", timeout=5).status_code == 200


def test_write_to_an_invalid_name_is_400_json(standin: StandIn, client: requests.Session) -> None:
    response = write(client, standin, "bad name", "cpu v=1")
    assert_json_error(
        response,
        400,
        "invalid character in database or rp name: must be ASCII, "
        "containing only letters, numbers, underscores, or hyphens",
    )


# ---- queries ----------------------------------------------------------------------------------


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


# ---- inspection behind the worker's back ------------------------------------------------------


def test_counters_and_reset(standin: StandIn, client: requests.Session) -> None:
    create(client, standin, "acme")
    create(client, standin, "acme")
    create(client, standin, "other")
    client.get(f"{standin.url}/health", timeout=5)
    standin.set_latency(0.01)

    assert standin.create_calls() == 3
    assert standin.create_calls("acme") == 2
    assert standin.request_count("POST", DATABASE_API) == 3
    assert standin.request_count(path="/health") == 1
    assert standin.request_count() == 4

    standin.reset()

    assert standin.databases() == []
    assert standin.create_calls() == 0
    assert standin.request_count() == 0
    assert standin.state()["switches"] == {
        "latency": 0.0,
        "error_rate": 0.0,
        "hang_rate": 0.0,
        "reset_rate": 0.0,
        "hang": False,
        "outage": False,
    }
    # The token stays.
    assert requests.get(f"{standin.url}/health", timeout=5).status_code == 401


def test_keep_alive_reuses_one_connection(standin: StandIn, client: requests.Session) -> None:
    for _ in range(5):
        assert client.get(f"{standin.url}/health", timeout=5).status_code == 200
    assert standin.state()["connections_accepted"] == 1


# ---- failure switches -------------------------------------------------------------------------


def test_latency_delays_every_answer(standin: StandIn, client: requests.Session) -> None:
    standin.set_latency(0.2)

    started = time.monotonic()
    assert client.get(f"{standin.url}/health", timeout=5).status_code == 200
    assert time.monotonic() - started >= 0.2

    # The control endpoints are exempt.
    started = time.monotonic()
    requests.get(f"{standin.url}/_standin/state", timeout=5)
    assert time.monotonic() - started < 0.2


def test_error_rate_one_answers_5xx_text(standin: StandIn, client: requests.Session) -> None:
    standin.set_faults(error_rate=1.0, seed=1)

    for _ in range(4):
        response = create(client, standin, "acme")
        assert response.status_code in (500, 503)
        assert "Content-Type" not in response.headers
        assert response.text
    assert standin.databases() == []

    standin.set_faults()
    assert create(client, standin, "acme").status_code == 200


def test_hang_makes_the_client_time_out_until_released(
    standin: StandIn, client: requests.Session
) -> None:
    standin.set_hang(True)
    with pytest.raises(requests.ReadTimeout):
        client.get(f"{standin.url}/health", timeout=(1, 0.3))

    standin.set_hang(False)
    assert client.get(f"{standin.url}/health", timeout=5).status_code == 200


def test_hang_rate_one_times_out(standin: StandIn, client: requests.Session) -> None:
    standin.set_faults(hang_rate=1.0)
    with pytest.raises(requests.ReadTimeout):
        client.post(f"{standin.url}{DATABASE_API}", json={"db": "acme"}, timeout=(1, 0.3))
    standin.set_faults()
    assert create(client, standin, "acme").status_code == 200


def test_reset_rate_one_resets_the_connection(standin: StandIn, client: requests.Session) -> None:
    standin.set_faults(reset_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        client.get(f"{standin.url}/health", timeout=5)
    standin.set_faults()
    assert client.get(f"{standin.url}/health", timeout=5).status_code == 200


def test_outage_refuses_connections_and_comes_back_on_the_same_port(
    standin: StandIn, client: requests.Session
) -> None:
    # Given a client with an open keep-alive connection
    assert client.get(f"{standin.url}/health", timeout=5).status_code == 200
    port = standin.port

    # When the server goes away, Then the open connection and new ones both fail
    standin.set_outage(True)
    with pytest.raises(requests.ConnectionError):
        client.get(f"{standin.url}/health", timeout=2)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{standin.url}/health", timeout=2)

    # And when it comes back, it listens on the same port with its data intact
    create_before = standin.create_calls()
    standin.set_outage(False)
    assert standin.port == port
    assert client.get(f"{standin.url}/health", timeout=5).status_code == 200
    assert standin.create_calls() == create_before


def test_stop_returns_promptly_with_a_hanging_request(standin: StandIn) -> None:
    standin.set_hang(True)
    outcome: list[str] = []

    def hanging_request() -> None:
        try:
            requests.get(f"{standin.url}/health", timeout=10)
            outcome.append("answered")
        except requests.RequestException as exc:
            outcome.append(type(exc).__name__)

    thread = threading.Thread(target=hanging_request)
    thread.start()
    deadline = time.monotonic() + 5
    while standin.request_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)

    started = time.monotonic()
    standin.stop()
    assert time.monotonic() - started < 1.5
    thread.join(timeout=5)
    assert outcome == ["ConnectionError"]


# ---- control endpoints (for a stand-in running as a separate process) -------------------------


def test_control_endpoints_need_no_auth_and_switch_faults(
    standin: StandIn, client: requests.Session
) -> None:
    state = requests.get(f"{standin.url}/_standin/state", timeout=5)
    assert state.status_code == 200
    assert TOKEN not in state.text
    assert state.json()["database_limit"] == 5

    switched = requests.post(
        f"{standin.url}/_standin/switches", json={"error_rate": 1.0, "database_limit": 3}, timeout=5
    )
    assert switched.status_code == 200
    assert switched.json()["switches"]["error_rate"] == 1.0
    assert client.get(f"{standin.url}/health", timeout=5).status_code in (500, 503)

    requests.post(f"{standin.url}/_standin/switches", json={"error_rate": 0}, timeout=5)
    assert client.get(f"{standin.url}/health", timeout=5).status_code == 200

    unknown = requests.post(f"{standin.url}/_standin/switches", json={"bogus": 1}, timeout=5)
    assert unknown.status_code == 400


def test_timed_outage_ends_by_itself(standin: StandIn) -> None:
    response = requests.post(
        f"{standin.url}/_standin/switches", json={"outage_seconds": 0.5}, timeout=5
    )
    assert response.status_code == 200

    deadline = time.monotonic() + 1
    refused = False
    while time.monotonic() < deadline and not refused:
        try:
            requests.get(f"{standin.url}/_standin/state", timeout=1)
            time.sleep(0.02)
        except requests.ConnectionError:
            refused = True
    assert refused

    deadline = time.monotonic() + 5
    while True:
        try:
            assert requests.get(f"{standin.url}/_standin/state", timeout=1).status_code == 200
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "the stand-in did not come back"
            time.sleep(0.05)


# ---- as a process -----------------------------------------------------------------------------


def test_runs_as_a_process_and_never_prints_the_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with subprocess.Popen(
        [sys.executable, "-m", "influxdb3_standin", "--port", "0", "--token-file", str(token_file)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            first_line = process.stdout.readline()
            match = re.fullmatch(r"influxdb3-standin listening on (http://\S+)\n", first_line)
            assert match, first_line
            url = match.group(1)

            headers = {"Authorization": f"Token {TOKEN}"}
            assert requests.get(f"{url}/health", headers=headers, timeout=5).text == "OK"
            assert requests.get(f"{url}/health", timeout=5).status_code == 401
        finally:
            process.terminate()
            stdout, stderr = process.communicate(timeout=10)

    assert process.returncode == 0
    assert "GET /health" in stderr
    assert TOKEN not in stdout + stderr + first_line
