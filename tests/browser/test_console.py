"""The operator console in a real headless Chromium, against the operator API under uvicorn, a
real Celery worker and the InfluxDB stand-in: what an operator does, click by click.

The screenshots in ``docs/screenshots`` (shown in docs/operating.md) are made here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from selenium.common.exceptions import (
    NoAlertPresentException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.browser.conftest import FLOWER_URL, screenshot
from tests.conftest import (
    INFLUX_TOKEN,
    OPERATOR_TOKEN,
    free_port,
    new_tenant_id,
    tenant_row,
    wait_for,
    wait_for_state,
)

HOSTILE_NAME = "<img src=x onerror=alert(1)>"


def load(browser: Any, url: str) -> None:
    browser.get(url)
    WebDriverWait(browser, 10).until(
        lambda b: b.execute_script("return document.readyState") == "complete"
    )


def submit(browser: Any, element: WebElement) -> None:
    """Click, then wait for the page the click leads to."""
    page = browser.find_element(By.TAG_NAME, "html")
    element.click()

    def replaced(_: Any) -> bool:
        try:
            page.is_enabled()
        except WebDriverException:  # stale, or ChromeDriver's "does not belong to the document"
            return True
        return False

    WebDriverWait(browser, 15).until(replaced)


def text(browser: Any, selector: str) -> str:
    """The text of ``selector`` on the page, once it is there (the page says what it is not)."""
    try:
        element = WebDriverWait(browser, 5).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, selector))
        )
    except TimeoutException:
        pytest.fail(f"no {selector} on {browser.current_url}:\n{browser.page_source[:3000]}")
    return str(element.text)


def sign_in(browser: Any, console: Any, token: str = OPERATOR_TOKEN) -> None:
    load(browser, f"{console.url}/sign-in")
    browser.find_element(By.ID, "token").send_keys(token)
    submit(browser, browser.find_element(By.CSS_SELECTOR, "#sign-in button"))


def test_pages_without_a_session_redirect_to_sign_in(console, browser, db):
    load(browser, console.url)
    browser.delete_all_cookies()
    for page in ("", "/tenants?state=failed", "/tenants/acme"):
        load(browser, console.url + page)
        assert browser.current_url.startswith(f"{console.url}/sign-in?next="), page
        assert browser.find_element(By.ID, "token").get_attribute("type") == "password"
    # A wrong token is refused on the page; the right one leads back to the page asked for
    sign_in(browser, console, token="not-it")
    assert "not the operator token" in text(browser, "#problem")
    load(browser, f"{console.url}/tenants?state=failed")
    browser.find_element(By.ID, "token").send_keys(OPERATOR_TOKEN)
    submit(browser, browser.find_element(By.CSS_SELECTOR, "#sign-in button"))
    assert browser.current_url == f"{console.url}/tenants?state=failed"
    # The session cookie is out of reach of any script on the page
    assert "tp_console_session" not in browser.execute_script("return document.cookie")
    # Signing out ends it
    submit(browser, browser.find_element(By.ID, "sign-out"))
    load(browser, console.url)
    assert "/sign-in" in browser.current_url


def test_overview_counts_match_the_database(console, browser, db, influx, worker_process, beat):
    # Given three tenants provisioned and two refused by InfluxDB (a token it does not take)
    good = [new_tenant_id("ok") for _ in range(3)]
    bad = [new_tenant_id("bad") for _ in range(2)]
    for tenant_id in good:
        console.create(tenant_id, f"Plant {tenant_id[-4:]}")
    for tenant_id in good:
        wait_for_state(db, tenant_id, "provisioned")
    influx.set_token("a-token-we-do-not-have")
    for tenant_id in bad:
        console.create(tenant_id, "Refused plant")
    for tenant_id in bad:
        wait_for_state(db, tenant_id, "failed")
    # (the token stays wrong: fixed, the reconciler would resume the two at its next run)
    wait_for(lambda: db.execute("SELECT last_started_at FROM reconcile_stats").fetchone()[0])
    # When the operator opens the overview
    sign_in(browser, console)
    load(browser, console.url)
    # Then every state's count is the database's
    expected = dict(
        db.execute("SELECT influxdb_state, count(*) FROM tenants GROUP BY 1").fetchall()
    )
    for row in browser.find_elements(By.CSS_SELECTOR, "#state-counts tbody tr"):
        state = row.get_attribute("data-state")
        count = row.find_element(By.CSS_SELECTOR, "[data-count]").text
        assert int(count) == expected.get(state, 0), state
    assert int(text(browser, "#total")) == 5
    assert text(browser, "#oldest").startswith(bad[0])
    node = browser.find_element(By.CSS_SELECTOR, "#pool tr[data-node='default']")
    placed = db.execute("SELECT count(*) FROM tenants WHERE influxdb_node = 'default'")
    assert node.find_element(By.CSS_SELECTOR, ".placed").text == str(placed.fetchone()[0])
    assert "tenants read" in text(browser, "#reconcile")
    screenshot(browser, "console-overview")
    influx.set_token(INFLUX_TOKEN)


def test_filter_to_failed_open_a_tenant_retry_and_see_it_provisioned(
    console, browser, db, influx, worker_process
):
    # Given a tenant that failed because InfluxDB refused the worker's token
    influx.set_token("a-token-we-do-not-have")
    failed = new_tenant_id("fail")
    console.create(failed, "Greenhouse 7")
    wait_for_state(db, failed, "failed")
    console.create(new_tenant_id("ok"), "Provisioned later")  # not failed once fixed
    influx.set_token(INFLUX_TOKEN)  # the operator fixed the token
    sign_in(browser, console)
    # When the operator filters the tenants to failed
    load(browser, f"{console.url}/tenants")
    Select(browser.find_element(By.ID, "state-filter")).select_by_value("failed")
    submit(browser, browser.find_element(By.CSS_SELECTOR, "#filters button"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#tenants tbody tr[data-tenant]")
    assert [r.get_attribute("data-tenant") for r in rows] == [failed]
    assert rows[0].find_element(By.CSS_SELECTOR, ".state").get_attribute("data-state") == "failed"
    # And opens it
    submit(browser, rows[0].find_element(By.TAG_NAME, "a"))
    assert "failed" in text(browser, "#state")
    assert text(browser, "#reason") == "unauthorized"
    # And presses retry
    submit(browser, browser.find_element(By.ID, "retry"))
    assert "Retry queued" in text(browser, "#notice")

    # Then the page shows it provisioned, with the attempt that did it and its Flower link
    def provisioned() -> bool:
        browser.refresh()
        return "provisioned" in text(browser, "#state")

    wait_for(provisioned, timeout=20, interval=0.5, what="the page to show provisioned")
    assert text(browser, "#live-exists") == "yes"
    newest = browser.find_element(By.CSS_SELECTOR, "#attempt-history tbody tr")
    assert "provisioned" in newest.text
    assert "default" in newest.text
    link = newest.find_element(By.LINK_TEXT, "in Flower").get_attribute("href")
    assert link.startswith(f"{FLOWER_URL}/task/")
    assert tenant_row(db, failed)["influxdb_state"] == "provisioned"
    screenshot(browser, "console-tenant")
    # Readable at a phone's width: nothing wider than the screen but the tables' own scroll
    browser.set_window_size(390, 844)
    try:
        browser.refresh()
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth"
        )
        wide = browser.execute_script(
            "return [...document.querySelectorAll('body *')].filter(e => "
            "e.getBoundingClientRect().right > window.innerWidth && !e.closest('.scroll'))"
            ".map(e => e.tagName + '#' + e.id + '.' + e.className + ' ' + "
            "e.getBoundingClientRect().right).slice(0, 8)"
        )
        assert overflow <= 0, wide
        screenshot(browser, "console-tenant-phone")
    finally:
        browser.set_window_size(1280, 900)


def test_delete_a_tenant_after_typing_its_id(console, browser, db, influx, worker_process):
    tenant_id = new_tenant_id("del")
    console.create(tenant_id, "Decommissioned site")
    wait_for_state(db, tenant_id, "provisioned")
    sign_in(browser, console)
    load(browser, f"{console.url}/tenants/{tenant_id}")
    submit(browser, browser.find_element(By.ID, "delete"))
    # A mistyped id deletes nothing
    browser.find_element(By.ID, "confirm").send_keys(tenant_id[:-1])
    submit(browser, browser.find_element(By.ID, "confirm-delete"))
    assert "Nothing was deleted" in text(browser, "#problem")
    assert tenant_row(db, tenant_id)["influxdb_state"] == "provisioned"
    # The exact id deletes the tenant and its database
    browser.find_element(By.ID, "confirm").send_keys(tenant_id)
    submit(browser, browser.find_element(By.ID, "confirm-delete"))
    assert "Deletion queued" in text(browser, "#notice")
    wait_for(lambda: tenant_row(db, tenant_id) is None, what="the tenant to be deleted")
    assert f"telemetry_{tenant_id}" not in influx.databases()
    browser.refresh()
    assert "is deleted" in text(browser, "#notice")


def test_a_hostile_tenant_name_renders_as_text_and_runs_nothing(
    console, browser, db, influx, worker_process
):
    tenant_id = new_tenant_id("xss")
    console.create(tenant_id, HOSTILE_NAME)
    sign_in(browser, console)
    for page in (
        f"/tenants?q={tenant_id}",
        f"/tenants/{tenant_id}",
        f"/tenants/{tenant_id}/delete",
    ):
        load(browser, console.url + page)
        assert not browser.find_elements(By.TAG_NAME, "img"), page
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018 - raises when no alert is open
    load(browser, f"{console.url}/tenants/{tenant_id}")
    assert text(browser, "#tenant-name") == HOSTILE_NAME
    load(browser, f"{console.url}/tenants?q={tenant_id}")
    assert HOSTILE_NAME in text(browser, "#tenants")


class _Attacker:
    """A page of another origin with a form that posts to the console, as a forger would."""

    def __init__(self, host: str, action: str, fields: dict[str, str]) -> None:
        inputs = "".join(f'<input type="hidden" name="{k}" value="{v}">' for k, v in fields.items())
        page = (
            f'<!doctype html><form method="post" action="{action}">{inputs}'
            '<button id="go">Win a prize</button></form>'
        )

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = page.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def provisioned_tenant(console, db, influx, worker_process) -> Iterator[str]:
    tenant_id = new_tenant_id("target")
    console.create(tenant_id, "Target")
    wait_for_state(db, tenant_id, "provisioned")
    yield tenant_id


@pytest.mark.parametrize(
    ("host", "why"),
    [
        # Same site, another origin: the browser sends the session, our guard refuses.
        ("127.0.0.1", "another origin"),
        # Another site: the SameSite=Strict session is not even sent.
        ("localhost", None),
    ],
)
def test_a_forged_cross_site_post_is_refused(console, browser, db, provisioned_tenant, host, why):
    sign_in(browser, console)
    action = f"{console.url}/tenants/{provisioned_tenant}/delete"
    attacker = _Attacker(host, action, {"confirm": provisioned_tenant, "csrf_token": "guess"})
    try:
        load(browser, attacker.url)
        submit(browser, browser.find_element(By.ID, "go"))
        if why:
            assert why in text(browser, "#problem")
        else:
            assert "/sign-in" in browser.current_url
    finally:
        attacker.close()
    row = tenant_row(db, provisioned_tenant)
    assert row is not None
    assert row["influxdb_state"] == "provisioned"


def test_the_tenant_page_timeline_updates_by_itself(console, browser, db, influx, worker_process):
    # Given a tenant that failed because InfluxDB refused the worker's token, its page open
    influx.set_token("a-token-we-do-not-have")
    tenant_id = new_tenant_id("live")
    console.create(tenant_id, "Cold store 3")
    wait_for_state(db, tenant_id, "failed")
    sign_in(browser, console)
    load(browser, f"{console.url}/tenants/{tenant_id}")
    page = browser.find_element(By.TAG_NAME, "html")
    shown = [
        r.get_attribute("data-type")
        for r in browser.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")
    ]
    assert shown[0] == "tenant.failed"
    wait_for(lambda: "Live:" in text(browser, "#timeline-live"), timeout=10, what="the stream")
    # When the token is fixed and someone else retries it (the UI, through the HTTP API)
    influx.set_token(INFLUX_TOKEN)
    retried = console.api.post(
        f"{console.base}/operator/tenants/{tenant_id}/influxdb/retry", timeout=10
    )
    assert retried.status_code == 202, retried.text

    # Then, without a reload, the timeline shows the new events at the top, and the state
    def newest() -> str | None:
        rows = browser.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")
        kind = rows[0].get_attribute("data-type") if rows else None
        return kind if kind == "tenant.provisioned" else None

    wait_for(newest, timeout=20, interval=0.2, what="the provisioned event on the open page")
    assert page.is_enabled()  # the same document: it was not reloaded
    assert "provisioned" in text(browser, "#state")
    sequence = [
        int(r.get_attribute("data-seq"))
        for r in browser.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")
    ]
    assert sequence == sorted(sequence, reverse=True)
    assert len(sequence) == len(set(sequence))
    assert sequence == list(range(sequence[0], 0, -1))[: len(sequence)]
    screenshot(browser, "console-timeline-live")
