"""The API as an attacker on the network meets it (issue 19): the headers on every answer,
HSTS and Secure cookies behind TLS, /metrics behind its scrape credential with a shared
reading, and no /docs page that loads a third party's scripts."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from api_hooks.app import CachedScrape, create_app
from api_hooks.console.sessions import SESSION_COOKIE
from api_hooks.headers import SECURITY_HEADERS
from harness.console import form_token, sign_in
from tests.conftest import OPERATOR_TOKEN
from worker.settings import Settings, SettingsError

METRICS_TOKEN = "metrics-test-token-" + "m" * 24
CONSOLE = "/operator/console"


def app_with(**env: str) -> TestClient:
    return TestClient(create_app(Settings.from_env({**os.environ, **env})), follow_redirects=False)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ANSWERS = [
    ("GET", "/healthz", {}, 200),
    ("GET", "/openapi.json", {}, 200),
    ("GET", "/operator/tenants/acme/stats", {}, 401),
    ("GET", "/operator/tenants/no-such-tenant/stats", bearer(OPERATOR_TOKEN), 404),
    ("GET", "/operator/tenants", bearer(OPERATOR_TOKEN), 405),
    ("POST", "/operator/tenants", bearer(OPERATOR_TOKEN), 422),
    ("GET", "/metrics", bearer(OPERATOR_TOKEN), 200),
    ("GET", "/nowhere", {}, 404),
    ("GET", CONSOLE, {}, 303),
    ("GET", f"{CONSOLE}/sign-in", {}, 200),
]


@pytest.mark.parametrize(("method", "path", "headers", "expected"), ANSWERS)
def test_every_answer_carries_the_security_headers(db, method, path, headers, expected):
    with app_with() as client:
        response = client.request(method, path, headers=headers)
    assert response.status_code == expected
    for name, value in SECURITY_HEADERS.items():
        if name == "Content-Security-Policy" and path.startswith(CONSOLE):
            assert "default-src 'none'" in response.headers[name]  # the console's own policy
        elif name == "Referrer-Policy" and path.startswith(CONSOLE):
            assert response.headers[name] in ("same-origin", "no-referrer")  # the page's own
        else:
            assert response.headers.get(name) == value, name
    assert "strict-transport-security" not in response.headers  # not behind TLS


def test_an_unexpected_error_is_a_500_that_carries_them_too(db):
    app = create_app()

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500 and response.text == "Internal Server Error"
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name


HOSTILE = [  # each was a 500: compare_digest refuses a str that is not ASCII; urlsplit "["
    ("POST", f"{CONSOLE}/sign-in", {"Cookie": "tp_console_csrf=abc"}, {"csrf_token": "é"}, 403),
    ("GET", CONSOLE, {"Cookie": 'tp_console_session="x.\\351"'}, None, 303),
    ("POST", f"{CONSOLE}/sign-in", {"Origin": "http://["}, {"token": "x"}, 403),
    ("POST", "/operator/tenants/acme/influxdb/retry", {"Origin": "http://[::1"}, None, 403),
    ("DELETE", "/operator/tenants/acme", {"Origin": "http://["}, None, 403),
]


@pytest.mark.parametrize(("method", "path", "headers", "form", "expected"), HOSTILE)
def test_hostile_cookies_and_origins_are_refused_not_500(db, method, path, headers, form, expected):
    with app_with() as client:
        client.cookies.clear()
        response = client.request(
            method, path, headers={**bearer(OPERATOR_TOKEN), **headers}, data=form
        )
    assert response.status_code == expected, response.text


def test_behind_tls_every_answer_says_so_and_cookies_are_secure(db):
    with app_with(API_BEHIND_TLS="1") as client:
        assert client.get("/nowhere").headers["strict-transport-security"].startswith("max-age=")
        # Over plain HTTP from the proxy, the form token's cookie is Secure...
        page = client.get(f"{CONSOLE}/sign-in")
        csrf = next(c for c in page.headers.get_list("set-cookie") if "tp_console_csrf" in c)
        assert "Secure" in csrf
        # ...and so is the session's (the browser, on HTTPS, sends the first one back)
        client.cookies.set("tp_console_csrf", csrf.split(";")[0].split("=", 1)[1], path="/")
        fields = {"token": OPERATOR_TOKEN, "csrf_token": form_token(page.text), "next": CONSOLE}
        response = client.post(f"{CONSOLE}/sign-in", data=fields)
    assert response.status_code == 303
    cookie = next(c for c in response.headers.get_list("set-cookie") if SESSION_COOKIE in c)
    assert "Secure" in cookie


def test_without_tls_the_cookie_follows_the_scheme(db):
    with app_with() as client:
        response = sign_in(client, CONSOLE, OPERATOR_TOKEN)
    cookie = next(c for c in response.headers.get_list("set-cookie") if SESSION_COOKIE in c)
    assert "Secure" not in cookie


def test_two_apps_of_one_process_share_routes_never_their_counts_of_failed_credentials(db):
    # Given two apps of the same settings in one process (their routes are built once)
    first, second = app_with(), app_with()
    stats = [route_of(client, "/operator/tenants/{tenant_id}/stats") for client in (first, second)]
    assert stats[0] is stats[1]
    with first, second:
        # When one address fails every credential in the first until it is throttled: the
        # operator token guessed at the sign-in form and at /operator, one count
        for attempt in range(5):
            operator = first.get("/operator/tenants/a/stats", headers=bearer("x"))
            if attempt < 2:
                assert sign_in(first, CONSOLE, "guess").status_code == 401
            assert operator.status_code == (401 if attempt < 3 else 429), attempt
            assert first.get("/locations", headers=bearer("x")).status_code == 401
        assert first.get("/operator/tenants/a/stats", headers=bearer("x")).status_code == 429
        assert first.get("/locations", headers=bearer("x")).status_code == 429
        assert sign_in(first, CONSOLE, "guess").status_code == 429
        # Then the second app has counted none of it
        assert second.get("/operator/tenants/a/stats", headers=bearer("x")).status_code == 401
        assert second.get("/locations", headers=bearer("x")).status_code == 401
        assert sign_in(second, CONSOLE, "guess").status_code == 401


def route_of(client: TestClient, path: str) -> Any:
    return next(route for route in client.app.routes if getattr(route, "path", "") == path)  # type: ignore[attr-defined]


def test_api_behind_tls_takes_only_0_or_1():
    with pytest.raises(SettingsError, match="API_BEHIND_TLS must be one of 0, 1"):
        Settings.from_env({**os.environ, "API_BEHIND_TLS": "yes"})


def test_no_docs_page_loads_scripts_from_elsewhere(db):
    with app_with() as client:
        assert client.get("/docs").status_code == 404
        assert client.get("/redoc").status_code == 404
        assert client.get("/openapi.json").json()["info"]["title"]


def test_metrics_need_the_scrape_credential(db):
    with app_with() as client:
        refused = client.get("/metrics")
        assert refused.status_code == 401
        assert refused.json() == {
            "detail": "metrics token required: Authorization: Bearer <METRICS_TOKEN>"
        }
        assert "tenant_provisioner" not in refused.text
        # METRICS_TOKEN unset: the operator token serves
        assert client.get("/metrics", headers=bearer(OPERATOR_TOKEN)).status_code == 200
    with app_with(METRICS_TOKEN=METRICS_TOKEN) as client:
        scraped = client.get("/metrics", headers=bearer(METRICS_TOKEN))
        assert scraped.status_code == 200
        assert "tenant_provisioner_" in scraped.text
        # Set: only it, not the operator token (and it opens nothing else)
        assert client.get("/metrics", headers=bearer(OPERATOR_TOKEN)).status_code == 401
        opened = client.get("/operator/tenants/acme/stats", headers=bearer(METRICS_TOKEN))
        assert opened.status_code == 401


def test_a_short_metrics_token_is_refused_at_start():
    with pytest.raises(SettingsError, match="METRICS_TOKEN must be at least 32 characters"):
        Settings.from_env({**os.environ, "METRICS_TOKEN": "short"})


class CountingCollector:
    """A collector that counts how often it is read (the queries a scrape would run)."""

    def __init__(self) -> None:
        self.reads = 0
        self.lock = threading.Lock()

    def collect(self) -> Any:
        with self.lock:
            self.reads += 1
        yield GaugeMetricFamily("reads", "times read", value=self.reads)


def test_a_burst_of_scrapes_reads_postgres_once():
    collector = CountingCollector()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    scrape = CachedScrape(registry)
    start = threading.Barrier(20)

    def scrape_once() -> None:
        start.wait()
        scrape.latest()

    threads = [threading.Thread(target=scrape_once) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert collector.reads == 1
    assert b"reads 1.0" in scrape.latest()
