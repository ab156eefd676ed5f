"""Creating, listing and (soft) deleting databases: names, bodies, retention periods."""

from __future__ import annotations

import re

import pytest
import requests

from influxdb3_standin import StandIn
from tests.standin.conftest import DATABASE_API, assert_json_error, assert_text_error, create


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


def test_list_with_show_deleted_adds_a_deleted_column(
    standin: StandIn, client: requests.Session
) -> None:
    # As InfluxDB 3's show_databases(include_deleted): active first, then deleted, by name
    for name in ("telemetry_b", "telemetry_a"):
        create(client, standin, name)
    client.delete(f"{standin.url}{DATABASE_API}", params={"db": "telemetry_a"}, timeout=5)
    url, params = f"{standin.url}{DATABASE_API}", {"format": "json", "show_deleted": "true"}

    listed = client.get(url, params=params, timeout=5).json()

    assert listed[:2] == [
        {"iox::database": "_internal", "deleted": False},
        {"iox::database": "telemetry_b", "deleted": False},
    ]
    assert len(listed) == 3 and listed[2]["deleted"] is True
    assert re.fullmatch(r"telemetry_a-\d{8}T\d{6}", listed[2]["iox::database"])
    shown = client.get(url, params={"format": "json", "show_deleted": "false"}, timeout=5)
    assert [e["iox::database"] for e in shown.json()] == ["_internal", "telemetry_b"]
    assert_text_error(client.get(url, params={**params, "show_deleted": "1"}, timeout=5), 400)


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
