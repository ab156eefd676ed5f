"""Failed credentials are throttled per address and overall, on every way in: the console's
sign-in, the operator token and the locations token."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from api_hooks.app import create_app
from api_hooks.throttle import Throttle
from harness.console import sign_in as console_sign_in
from tests.conftest import LOCATIONS_TOKEN, OPERATOR_TOKEN

CONSOLE = "/operator/console"
ATTACKER = ("203.0.113.7", 40000)
OPERATOR = ("198.51.100.2", 40001)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_client_is_refused_after_its_failures_until_they_leave_the_window():
    clock = Clock()
    throttle = Throttle(per_client=3, overall=100, window=60, clock=clock)
    for _ in range(3):
        assert throttle.retry_after("a") is None
        throttle.failed("a")
        clock.now += 1
    assert throttle.retry_after("a") == pytest.approx(57)  # the first failure leaves at 60
    assert throttle.retry_after("b") is None  # another address is not locked out
    clock.now += 57
    assert throttle.retry_after("a") is None


def test_many_addresses_failing_together_are_refused_overall():
    clock = Clock()
    throttle = Throttle(per_client=3, overall=10, window=60, clock=clock)
    for n in range(10):
        throttle.failed(f"bot-{n}")
    assert throttle.retry_after("someone-new") == pytest.approx(60)


@pytest.mark.parametrize(
    ("path", "token"), [("/operator/tenants/acme/stats", "wrong"), ("/locations", "wrong")]
)
def test_1000_wrong_bearer_tokens_from_one_address_are_throttled_not_the_next(db, path, token):
    app = create_app()
    with TestClient(app, client=ATTACKER) as attacker, TestClient(app, client=OPERATOR) as ops:
        answers = [
            attacker.get(path, headers={"Authorization": f"Bearer {token}"}).status_code
            for _ in range(1000)
        ]
        # Then after a handful of 401s every answer is 429, with a time to come back
        assert answers[:5] == [401] * 5
        assert set(answers[5:]) == {429}
        throttled = attacker.get(path, headers={"Authorization": "Bearer x"})
        assert int(throttled.headers["Retry-After"]) > 0
        # And the right token from another address still works at once
        right = OPERATOR_TOKEN if path.startswith("/operator") else LOCATIONS_TOKEN
        assert ops.get(path, headers={"Authorization": f"Bearer {right}"}).status_code in (200, 404)


@pytest.mark.parametrize(
    ("path", "right"),
    [("/locations", LOCATIONS_TOKEN), ("/operator/tenants/acme/stats", OPERATOR_TOKEN)],
)
def test_many_addresses_failing_together_do_not_lock_out_the_right_token(db, path, right):
    app = create_app()
    # Given 30 addresses sending wrong tokens, 4 each (each under its own limit of 5)
    for n in range(30):
        with TestClient(app, client=(f"203.0.113.{n}", 40000)) as bot:
            for _ in range(4):
                bot.get(path, headers={"Authorization": "Bearer wrong"})
    with TestClient(app, client=OPERATOR) as client:
        # Then a new address with a wrong token is refused by the overall limit...
        assert client.get(path, headers={"Authorization": "Bearer x"}).status_code == 429
        # ... and the right token is not: the data plane keeps its locations
        answer = client.get(path, headers={"Authorization": f"Bearer {right}"})
        assert answer.status_code in (200, 404)
    with TestClient(app, client=ATTACKER) as attacker:
        # While its own limit still holds for wrong tokens
        for _ in range(5):
            assert attacker.get(path, headers={"Authorization": "Bearer x"}).status_code == 429


@pytest.mark.parametrize(
    ("path", "right"),
    [("/locations", LOCATIONS_TOKEN), ("/operator/tenants/acme/stats", OPERATOR_TOKEN)],
)
def test_a_stranger_s_wrong_tokens_from_a_shared_address_do_not_lock_out_the_right_one(
    db, path, right
):
    # Given a TLS proxy in front: every client arrives from its address, and a stranger
    # sends wrong tokens through it until that address is throttled
    app = create_app()
    with TestClient(app, client=("10.0.0.1", 40000)) as proxy:
        answers = [
            proxy.get(path, headers={"Authorization": "Bearer wrong"}).status_code for _ in range(8)
        ]
        assert answers == [401] * 5 + [429] * 3

        # Then a client of the data plane (or an operator) with the right token still passes
        answer = proxy.get(path, headers={"Authorization": f"Bearer {right}"})
        assert answer.status_code in (200, 404)
        # and the stranger's next guess is still refused with a time to come back
        assert proxy.get(path, headers={"Authorization": "Bearer x"}).status_code == 429


def test_1000_wrong_sign_ins_from_one_address_do_not_lock_out_the_operator(db: Any):
    app = create_app()
    with (
        TestClient(app, client=ATTACKER, follow_redirects=False) as attacker,
        TestClient(app, client=OPERATOR, follow_redirects=False) as operator,
    ):
        statuses = [
            console_sign_in(attacker, CONSOLE, f"guess-{n}", next=CONSOLE).status_code
            for n in range(1000)
        ]
        assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
        assert "Too many failed sign-ins" in console_sign_in(attacker, CONSOLE, "x").text
        assert console_sign_in(operator, CONSOLE, OPERATOR_TOKEN).status_code == 303
        # The right token signs in even from the throttled address (a proxy's is everyone's):
        # a token of 32 characters or more is not guessed by trying
        assert console_sign_in(attacker, CONSOLE, OPERATOR_TOKEN).status_code == 303
        assert console_sign_in(attacker, CONSOLE, "guess").status_code == 429
