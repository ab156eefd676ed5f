"""Health, ping and routing, and the token check every API path is behind."""

from __future__ import annotations

import json

import pytest
import requests

from influxdb3_standin import StandIn
from tests.standin.conftest import DATABASE_API, TOKEN, assert_json_error, assert_text_error

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
