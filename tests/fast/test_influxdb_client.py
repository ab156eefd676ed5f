"""The InfluxDB client against the stand-in over HTTP, and against a server answering garbage."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from email.utils import parsedate_to_datetime

import pytest

from tests.conftest import INFLUX_TOKEN, write_points
from tests.scripted_http import ScriptedServer
from worker.errors import (
    DatabaseLimitReached,
    InfluxDBBadResponse,
    InfluxDBRejected,
    InfluxDBServerError,
    InfluxDBTimeout,
    InfluxDBUnauthorized,
    InfluxDBUnreachable,
    InvalidDatabaseName,
    PermanentError,
    TransientError,
)
from worker.identity import Contents, Marker
from worker.influxdb import MAX_ANSWER_BYTES, InfluxDB3Client


@pytest.fixture
def client(influx):
    client = InfluxDB3Client(influx.url, INFLUX_TOKEN, connect_timeout=0.5, read_timeout=1.0)
    yield client
    client.close()


def test_ensure_database_creates_then_finds_it(client, influx):
    assert client.ensure_database("telemetry_a") is True
    assert client.ensure_database("telemetry_a") is False
    assert client.list_databases() == ["telemetry_a"]
    assert influx.create_calls("telemetry_a") == 2


def test_the_listing_tells_soft_deleted_databases_from_active_ones(client, influx):
    # Given one database deleted, and a name made again after it
    for name in ("telemetry_a", "telemetry_b"):
        client.ensure_database(name)
    client.delete_database("telemetry_b")
    client.ensure_database("telemetry_b")
    # Then the active names and the soft-deleted copy come apart; _internal is neither
    active, deleted, date = client.list_all()
    assert active == ["telemetry_a", "telemetry_b"] == client.list_databases()
    assert len(deleted) == 1 and re.fullmatch(r"telemetry_b-\d{8}T\d{6}", deleted[0])
    # with the server's time as it answered (its Date), which stamped that name
    assert date is not None and parsedate_to_datetime(date).utcoffset() == timedelta(0)


def test_a_server_that_does_not_show_deleted_databases_lists_none(scripted):
    # Given a server that ignores show_deleted (no `deleted` column): every name is active
    scripted.answer(200, '[{"iox::database": "_internal"}, {"iox::database": "telemetry_a"}]')
    listed = InfluxDB3Client(scripted.url).list_all()
    assert (listed.active, listed.deleted) == (["telemetry_a"], [])
    assert "show_deleted=true" in scripted.requests[0][1]


def test_limit_is_a_permanent_capacity_error_and_409_wins_over_it(client, influx):
    for i in range(5):
        client.ensure_database(f"db{i}")
    with pytest.raises(DatabaseLimitReached, match="exceed limit of 5"):
        client.ensure_database("db5")
    assert client.ensure_database("db0") is False  # existence is checked before the limit


def test_invalid_name_and_wrong_token_are_permanent(client, influx):
    with pytest.raises(InvalidDatabaseName, match="invalid character"):
        client.ensure_database("bad name")
    influx.set_token("another")
    with pytest.raises(InfluxDBUnauthorized) as raised:
        client.list_databases()
    assert INFLUX_TOKEN not in str(raised.value)


def test_outage_hang_and_5xx_are_transient(client, influx):
    influx.set_outage(True)
    with pytest.raises(InfluxDBUnreachable, match="connection refused"):
        client.list_databases()
    influx.set_outage(False)
    influx.set_hang(True)
    started = time.monotonic()
    with pytest.raises(InfluxDBTimeout, match="read timeout after 1s"):
        client.ensure_database("x")
    assert time.monotonic() - started < 2.5
    influx.set_hang(False)
    influx.set_faults(error_rate=1.0)
    with pytest.raises(InfluxDBServerError, match="HTTP 5"):
        client.ensure_database("x")


def test_marker_write_and_row_count(client, influx):
    client.ensure_database("telemetry_t")
    assert client.read_markers("telemetry_t") == []  # no _init table yet
    client.write_marker("telemetry_t", "t", "inc-1", 1_700_000_000_000_000_000)
    client.write_marker("telemetry_t", "t", "inc-1", 1_700_000_000_000_000_000)
    assert client.count_rows("telemetry_t", "_init") == 1
    # the incarnation twice: named by the table's schema, and in the point
    assert client.read_markers("telemetry_t") == [Marker(None, "inc-1"), Marker("t", "inc-1")]
    assert client.read_markers("telemetry_missing") is None
    assert client.count_rows("telemetry_t", "telemetry") == 0  # table missing
    assert client.count_rows("telemetry_missing", "telemetry") is None  # database missing


def test_live_check_never_raises_and_is_bounded(client, influx):
    client.ensure_database("telemetry_live")
    assert client.live_check("telemetry_live", "telemetry", 1.0).exists is True
    influx.set_hang(True)
    started = time.monotonic()
    check = client.live_check("telemetry_live", "telemetry", 0.3)
    assert time.monotonic() - started < 1.0
    assert check.exists is None
    assert check.error is not None
    assert check.error.startswith("timeout")


@pytest.mark.parametrize(
    ("status", "body", "family", "reason"),
    [
        (200, "<html>proxy says hi</html>", TransientError, "bad_response"),
        (200, '{"not": "a list"}', TransientError, "bad_response"),
        (200, '[{"name": "x"}]', TransientError, "bad_response"),
        (200, '[{"iox::database": "x", "deleted": "yes"}]', TransientError, "bad_response"),
        # InfluxDB 3 always lists _internal: without it, not a listing of all there is
        (200, "[]", TransientError, "bad_response"),
        (200, '[{"iox::database": "telemetry_a"}]', TransientError, "bad_response"),
        (200, '[{"iox::database": "_internal", "deleted": true}]', TransientError, "bad_response"),
        (200, "[" * 5000, TransientError, "bad_response"),  # too deep for json: RecursionError
        (503, "[" * 5000, TransientError, "server_error"),  # error bodies are parsed too
        (502, "<html>Bad Gateway</html>", TransientError, "server_error"),
        (503, "", TransientError, "server_error"),
        (418, "I'm a teapot", PermanentError, "rejected"),
        (401, "not json at all", PermanentError, "unauthorized"),
        (400, '{"error": "Authorization header was malformed"}', PermanentError, "unauthorized"),
        (400, "bad line: _init,tenant=authorizer-co x=1", PermanentError, "rejected"),
        (404, "", PermanentError, "rejected"),
    ],
)
def test_unexpected_answers_map_to_a_family_and_reason(scripted, status, body, family, reason):
    scripted.answer(status, body)
    client = InfluxDB3Client(scripted.url, "secret-token-123456", read_timeout=1.0)
    with pytest.raises(family) as raised:
        client.list_databases()
    assert raised.value.reason == reason
    assert "secret-token-123456" not in str(raised.value)


@pytest.mark.parametrize(
    "schema_answer",
    [
        (400, "Error during planning: table 'information_schema.columns' not found"),
        (200, "[]"),  # a server that answers every query it does not know with no rows
    ],
    ids=["refused", "no-rows"],
)
def test_markers_are_read_from_the_points_where_the_schema_query_is_not_answered(
    scripted, schema_answer
):
    # Given a server that does not answer the information_schema query, but holds a marker
    points = '[{"tenant": "t", "incarnation": "inc-1", "initialized": 1, "time": "2026-01-01"}]'
    scripted.answer_next(schema_answer, (200, points))
    client = InfluxDB3Client(scripted.url, "secret-token-123456", read_timeout=1.0)

    # Then the marker is still read: a 409 on such a server is not taken for a stranger's
    assert client.read_markers("telemetry_t") == [Marker("t", "inc-1")]
    queries = [path for method, path, _ in scripted.requests if "query_sql" in path]
    assert len(queries) == 2 and "_init" in queries[1]


def test_a_database_gone_by_both_marker_queries_is_missing(scripted):
    not_found = (404, '{"error": "query error: database not found: telemetry_t"}')
    scripted.answer_next((400, "table 'information_schema.columns' not found"), not_found)
    client = InfluxDB3Client(scripted.url, "secret-token-123456", read_timeout=1.0)
    assert client.read_markers("telemetry_t") is None


def test_error_bodies_are_cut_and_redacted(scripted):
    scripted.answer(500, "token secret-token-123456 leaked " + "x" * 5000)
    client = InfluxDB3Client(scripted.url, "secret-token-123456")
    with pytest.raises(InfluxDBServerError) as raised:
        client.ensure_database("x")
    message = str(raised.value)
    assert "secret-token-123456" not in message
    assert len(message) < 400


def test_a_token_split_by_the_first_cut_of_an_error_body_is_not_stored_in_part(scripted):
    # Given a body whose first 4,096 characters end inside the token, padded with whitespace
    # that the message collapses: what the cut left of the token would come within the 300
    token = "0123456789abcdef" * 4
    scripted.answer(500, "<pre>" + " " * 4050 + "echo: " + token)
    client = InfluxDB3Client(scripted.url, token)
    with pytest.raises(InfluxDBServerError) as raised:
        client.ensure_database("x")
    # Then no part of it is in the message
    assert token[:12] not in str(raised.value)


def test_no_token_means_no_authorization_header(scripted):
    scripted.answer(200, '[{"iox::database": "_internal"}]')
    InfluxDB3Client(scripted.url).list_databases()
    InfluxDB3Client(scripted.url, "tok-abcdef").list_databases()
    assert "Authorization" not in scripted.requests[0][2]
    assert scripted.requests[1][2]["Authorization"] == "Bearer tok-abcdef"


def test_415_and_unknown_4xx_are_rejections(scripted):
    scripted.answer(415, "unacceptable content-type, expected: application/json")
    with pytest.raises(InfluxDBRejected):
        InfluxDB3Client(scripted.url).ensure_database("x")
    scripted.answer(400, '{"error": "serde json error: bad"}')
    with pytest.raises(InfluxDBRejected) as raised:
        InfluxDB3Client(scripted.url).ensure_database("x")
    assert not isinstance(raised.value, InvalidDatabaseName)
    assert isinstance(raised.value, InfluxDBRejected)
    assert not isinstance(raised.value, InfluxDBBadResponse)


def test_the_environments_proxy_is_still_used_read_once(scripted, monkeypatch):
    # Given a proxy in the environment (the scripted server plays it) when the client is made
    monkeypatch.setenv("HTTP_PROXY", scripted.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    scripted.answer(200, '[{"iox::database": "_internal"}, {"iox::database": "telemetry_a"}]')
    client = InfluxDB3Client("http://influxdb.invalid:8181", "token-abc", read_timeout=1.0)
    monkeypatch.delenv("HTTP_PROXY")  # read once: a later change does not matter

    # Then its calls go through that proxy, to the server's absolute URL
    assert client.list_databases() == ["telemetry_a"]
    ((method, target, _),) = scripted.requests
    assert (method, target.split("?")[0]) == (
        "GET",
        "http://influxdb.invalid:8181/api/v3/configure/database",
    )
    client.close()


def test_a_redirect_is_not_followed(scripted):
    # Given a server that redirects every call elsewhere (a proxy, a captive portal, an attacker)
    elsewhere = ScriptedServer()
    try:
        elsewhere.answer(200, "[]")
        scripted.headers["Location"] = f"{elsewhere.url}/api/v3/configure/database"
        scripted.answer(307, "")
        client = InfluxDB3Client(scripted.url, "secret-token-123456", read_timeout=1.0)

        # When the worker lists its databases, the redirect is an error, and nothing follows it
        with pytest.raises(InfluxDBBadResponse, match="redirects are not followed"):
            client.list_databases()
        assert elsewhere.requests == []  # the token never went there
    finally:
        elsewhere.close()


def test_an_answer_over_the_size_cap_is_not_read(scripted):
    # A listing a megabyte over the cap: refused once the cap is passed, not held in memory
    scripted.answer(200, b"[" + b" " * (MAX_ANSWER_BYTES + 1_000_000) + b"]")
    client = InfluxDB3Client(scripted.url, "secret-token-123456", read_timeout=5.0)
    with pytest.raises(InfluxDBBadResponse, match=f"over {MAX_ANSWER_BYTES} bytes"):
        client.list_databases()


def test_contents_of_an_empty_database_cost_one_query(client, influx):
    # A create makes no table: one query says so, and that there is no marker to read
    client.ensure_database("telemetry_t")
    before = client.calls
    assert client.read_contents("telemetry_t") == Contents([], empty=True)
    assert client.calls == before + 1
    assert client.read_contents("telemetry_missing") is None

    # A write makes its table: not empty, and the markers are read
    client.write_marker("telemetry_t", "t", "inc-1", 1_700_000_000_000_000_000)
    contents = client.read_contents("telemetry_t")
    assert contents == Contents([Marker(None, "inc-1"), Marker("t", "inc-1")], empty=False)
    write_points(influx, "telemetry_u", "telemetry,device=d1 value=1i")
    assert client.read_contents("telemetry_u") == Contents([], empty=False)


def test_a_server_without_information_schema_cannot_say_empty(scripted):
    # (its tables query is refused as an unknown table; the markers are then read by points)
    scripted.answer_next(
        (400, "Error during planning: table 'information_schema.tables' not found"),
        (400, "Error during planning: table 'information_schema.columns' not found"),
        (400, "Error during planning: table '_init' not found"),
    )
    client = InfluxDB3Client(scripted.url, "secret-token-123456", read_timeout=1.0)
    assert client.read_contents("telemetry_t") == Contents([], empty=False)


def test_a_marker_older_than_the_retention_period_still_names_its_incarnation(client, influx):
    # Given a database with a retention period and a marker point older than it (its time is
    # the tenant's creation): InfluxDB hides such a point from every query
    client.ensure_database("telemetry_old", "1h")
    two_hours_ago = time.time_ns() - 2 * 3600 * 1_000_000_000  # the server's clock: the wall's
    client.write_marker("telemetry_old", "old", "inc-old", two_hours_ago)
    assert client.count_rows("telemetry_old", "_init") == 0

    # Then its schema, which no retention touches, still says whose it is
    assert client.read_markers("telemetry_old") == [Marker(None, "inc-old")]


def test_a_refused_schema_query_is_an_error_not_an_empty_schema(scripted):
    # A proxy's 403 is not "no information_schema": past retention the schema is the only
    # evidence of whose database it is, so reading the points alone could misjudge it
    points = '[{"tenant": "t", "incarnation": "inc-1"}]'
    scripted.answer_next((403, "forbidden by policy"), (200, points))
    client = InfluxDB3Client(scripted.url, "secret-token-123456", read_timeout=1.0)
    with pytest.raises(InfluxDBRejected):
        client.read_markers("telemetry_t")
