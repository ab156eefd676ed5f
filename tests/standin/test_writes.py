"""Line-protocol writes: auto-created databases, precision, partial writes, limits."""

from __future__ import annotations

import json

import pytest
import requests

from influxdb3_standin import StandIn
from tests.standin.conftest import assert_json_error, assert_text_error, write


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
