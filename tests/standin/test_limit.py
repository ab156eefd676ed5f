"""Core's limit of five databases per server, however the databases came to be."""

from __future__ import annotations

import pytest
import requests

from influxdb3_standin import StandIn
from tests.standin.conftest import DATABASE_API, assert_json_error, create, write


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
