"""The operator console in-process (TestClient): sign-in, sessions, CSRF, escaping, paging.

Every request here is answered or refused before anything is published: the pages read the
test's Postgres; the actions that publish (retry, delete) are driven in a real browser against
a real worker in ``tests/browser``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from api_hooks.app import create_app
from api_hooks.cli import main as cli_main
from api_hooks.console.guard import CSRF_COOKIE, CsrfGuard
from api_hooks.console.reads import PAGE_SIZE
from api_hooks.console.render import TIMELINE_JS
from api_hooks.console.sessions import SESSION_COOKIE, ConsoleSessions
from harness.console import form_token
from harness.console import sign_in as console_sign_in
from tests.conftest import INFLUX_TOKEN, OPERATOR_TOKEN, tenant_row
from tests.fast.conftest import T0, insert
from worker.db import deployment_secret


def sha256_b64(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


CONSOLE = "/operator/console"
HOSTILE_NAME = "<img src=x onerror=alert(1)>"


def sign_in(client: TestClient, token: str = OPERATOR_TOKEN, next: str = CONSOLE) -> Any:
    return console_sign_in(client, CONSOLE, token, next=next)


@pytest.fixture
def anonymous(db: Any) -> Iterator[TestClient]:
    with TestClient(create_app(), follow_redirects=False) as client:
        yield client


@pytest.fixture
def operator(anonymous: TestClient) -> TestClient:
    assert sign_in(anonymous).status_code == 303
    return anonymous


@pytest.mark.parametrize(
    "path", ["", "/tenants?state=failed", "/tenants/acme", "/tenants/acme/delete", "/strays"]
)
def test_pages_without_a_session_redirect_to_sign_in_and_back(anonymous, path):
    response = anonymous.get(CONSOLE + path)
    assert response.status_code == 303
    assert response.headers["location"] == f"{CONSOLE}/sign-in?next={quote(CONSOLE + path)}"


def test_sign_in_sets_a_strict_httponly_expiring_cookie_and_returns_to_the_page(anonymous):
    # Given the sign-in page, reached from a deep link
    response = sign_in(anonymous, next=f"{CONSOLE}/tenants?state=failed")
    # Then the browser goes back there, with a session cookie it cannot read from script
    assert response.status_code == 303
    assert response.headers["location"] == f"{CONSOLE}/tenants?state=failed"
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE)
    )
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Max-Age=28800" in cookie  # CONSOLE_SESSION_MINUTES, 480 by default
    assert f"Path={CONSOLE}" in cookie
    assert OPERATOR_TOKEN not in cookie
    assert anonymous.get(CONSOLE).status_code == 200


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/elsewhere"])
def test_sign_in_never_sends_the_browser_off_the_console(anonymous, target):
    assert sign_in(anonymous, next=target).headers["location"] == CONSOLE


def test_a_wrong_token_is_refused_and_no_session_is_made(anonymous):
    response = sign_in(anonymous, token="not-the-token")
    assert response.status_code == 401
    assert "not the operator token" in response.text
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert anonymous.get(CONSOLE).status_code == 303


def test_sign_in_without_the_form_token_is_refused(anonymous):
    anonymous.get(f"{CONSOLE}/sign-in")
    response = anonymous.post(f"{CONSOLE}/sign-in", data={"token": OPERATOR_TOKEN})
    assert response.status_code == 403
    assert anonymous.get(CONSOLE).status_code == 303


def session_cookie(client: TestClient) -> str:
    cookie = client.cookies.get(SESSION_COOKIE)
    assert cookie
    return cookie


def with_cookie(cookie: str) -> TestClient:
    """Another browser holding a copy of ``cookie`` (taken from the wire, say)."""
    client = TestClient(create_app(), follow_redirects=False)
    client.cookies.set(SESSION_COOKIE, cookie, path=CONSOLE)
    return client


def test_sign_out_ends_the_session_wherever_its_cookie_is(db, operator):
    # Given a signed-in operator whose cookie was copied
    stolen = with_cookie(session_cookie(operator))
    assert stolen.get(CONSOLE).status_code == 200
    # When the operator signs out
    page = operator.get(CONSOLE)
    response = operator.post(f"{CONSOLE}/sign-out", data={"csrf_token": form_token(page.text)})
    assert response.status_code == 303
    assert response.headers["location"] == f"{CONSOLE}/sign-in"
    # Then the session is over for the copy too, and the row says how it ended
    assert operator.get(CONSOLE).status_code == 303
    assert stolen.get(CONSOLE).status_code == 303
    ended = db.execute("SELECT ended_by FROM console_sessions WHERE ended_at IS NOT NULL")
    assert [row[0] for row in ended] == ["sign-out"]


def test_the_cookie_holds_a_signed_id_and_postgres_only_its_hash(db, operator):
    cookie = session_cookie(operator)
    session_id, signature = cookie.split(".")
    (row,) = db.execute("SELECT id_hash FROM console_sessions").fetchall()
    assert bytes(row[0]) == hashlib.sha256(session_id.encode()).digest()
    # A cookie with another id, or a signature not ours, is refused
    assert with_cookie(f"{session_id}x.{signature}").get(CONSOLE).status_code == 303
    assert with_cookie(f"{session_id}.AAAA").get(CONSOLE).status_code == 303
    assert with_cookie("garbage").get(CONSOLE).status_code == 303


@pytest.mark.parametrize(
    ("column", "shift", "live"),
    [
        # Unused for the idle timeout (30 min by default) and one second more: over
        ("last_seen_at", "-30 min -1 s", False),
        ("last_seen_at", "-29 min", True),
        # Past its lifetime (CONSOLE_SESSION_MINUTES), however recently used: over
        ("expires_at", "-1 s", False),
    ],
)
def test_a_session_ends_when_idle_or_past_its_lifetime(db, operator, column, shift, live):
    # Times are Postgres' own, on both sides of the comparison
    db.execute(f"UPDATE console_sessions SET {column} = clock_timestamp() + %s::interval", (shift,))
    assert operator.get(CONSOLE).status_code == (200 if live else 303)


def test_each_use_keeps_a_session_alive(db, operator):
    db.execute("UPDATE console_sessions SET last_seen_at = clock_timestamp() - interval '29 min'")
    assert operator.get(CONSOLE).status_code == 200
    # The use moved last_seen_at: the session has a whole idle timeout again
    idle = db.execute(
        "SELECT clock_timestamp() - last_seen_at AS idle FROM console_sessions"
    ).fetchone()
    assert idle[0] < timedelta(minutes=1)


def test_a_new_token_signs_every_session_out(db, operator):
    cookie = session_cookie(operator)
    same = ConsoleSessions(OPERATOR_TOKEN, 480, 30, lambda: deployment_secret("console"))
    assert same.valid(cookie)
    other = ConsoleSessions("t" * 40, 480, 30, lambda: deployment_secret("console"))
    assert not other.valid(cookie)


def test_operators_list_and_end_sessions_from_the_cli(db, operator, capsys):
    # Given a live session, listed by the CLI
    assert cli_main(["--json", "sessions"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["actor"] == "operator-token"
    # When one is ended by its id (a prefix of it is enough)
    assert cli_main(["sessions", "--end", listed["id"][:8]]) == 0
    assert "ended 1 console session(s)" in capsys.readouterr().out
    # Then the browser holding it is signed out, and the CLI lists none
    assert operator.get(CONSOLE).status_code == 303
    assert cli_main(["--json", "sessions"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    # An id that names no live session, or is not an id, changes nothing and says so
    assert cli_main(["sessions", "--end", listed["id"]]) == 3
    assert cli_main(["sessions", "--end", "zz'; --"]) == 2
    assert "hex digits" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [["list"], ["status", "acme", "--no-live"], ["sessions"], ["nodes"], ["strays"], ["audit"]],
)
def test_json_comes_before_or_after_the_command_alike(db, capsys, command):
    insert(db, "acme")
    code = cli_main(["--json", *command])
    before = json.loads(capsys.readouterr().out)
    assert cli_main([*command, "--json"]) == code
    assert json.loads(capsys.readouterr().out) == before


def test_end_all_signs_everyone_out(db, operator):
    second = TestClient(create_app(), follow_redirects=False)
    assert sign_in(second).status_code == 303
    assert second.get(CONSOLE).status_code == 200
    assert cli_main(["sessions", "--end-all"]) == 0
    assert operator.get(CONSOLE).status_code == 303
    assert second.get(CONSOLE).status_code == 303


@pytest.mark.parametrize(
    ("headers", "token", "why"),
    [
        ({"Origin": "http://evil.example"}, "page", "another origin"),
        ({"Sec-Fetch-Site": "cross-site"}, "page", "another origin (cross-site)"),
        ({}, "x", "not valid"),
        ({}, None, "no security token"),
    ],
)
def test_a_forged_post_is_refused_and_changes_nothing(db, operator, headers, token, why):
    # Given a failed tenant and a signed-in operator
    insert(db, "acme", state="failed", error_reason="unauthorized", attempts=3)
    page = operator.get(f"{CONSOLE}/tenants/acme")
    form = (
        {} if token is None else {"csrf_token": form_token(page.text) if token == "page" else "x"}
    )
    # When a request the operator did not make posts to the actions
    for action in ("retry", "delete"):
        response = operator.post(
            f"{CONSOLE}/tenants/acme/{action}", data={**form, "confirm": "acme"}, headers=headers
        )
        # Then it is refused, saying why, and the tenant is untouched
        assert response.status_code == 403
        assert why in response.text
    row = tenant_row(db, "acme")
    assert row is not None
    assert (row["influxdb_state"], row["influxdb_attempts"]) == ("failed", 3)


def test_delete_needs_the_tenant_id_typed_exactly(db, operator):
    insert(db, "acme", state="provisioned")
    page = operator.get(f"{CONSOLE}/tenants/acme/delete")
    assert page.status_code == 200
    for typed in ("", "acm", "ACME", "acme2"):
        response = operator.post(
            f"{CONSOLE}/tenants/acme/delete",
            data={"csrf_token": form_token(page.text), "confirm": typed},
        )
        assert response.status_code == 422
        assert "Nothing was deleted" in response.text
    assert tenant_row(db, "acme")["influxdb_state"] == "provisioned"


def test_a_hostile_name_is_text_on_every_page(db, operator):
    insert(db, "xss", state="failed", error_reason="rejected", last_error=HOSTILE_NAME)
    db.execute("UPDATE tenants SET name = %s WHERE tenant_id = 'xss'", (HOSTILE_NAME,))
    for path in ("/tenants", "/tenants/xss", "/tenants/xss/delete", ""):
        body = operator.get(CONSOLE + path).text
        assert "<img" not in body, path
    assert "&lt;img src=x onerror=alert(1)&gt;" in operator.get(f"{CONSOLE}/tenants/xss").text


def test_a_row_whose_id_is_no_valid_tenant_id_is_listed_and_linked_encoded(db, operator):
    # Given rows of the platform's table whose ids no tenant may have (each ends up
    # failed/invalid_name): a path separator, a query and a fragment mark, spaces, non-ASCII
    odd = ["bad id/é", "q?x#y"]
    for at, tenant_id in enumerate(odd):
        insert(db, tenant_id, at=T0 - timedelta(days=1 + at), state="failed")
        db.execute("UPDATE tenants SET influxdb_error_reason = 'invalid_name'")

    # Then the overview (where the oldest is named) and the tenants pages answer, each id
    # shown as text, and not linked: no page answers for it (where one would, a valid id's)
    for path in ("", "/tenants", "/tenants?state=failed", "/tenants?q=bad"):
        page = operator.get(CONSOLE + path)
        assert page.status_code == 200, path
    listed = operator.get(f"{CONSOLE}/tenants").text
    assert "<td>bad id/é</td>" in listed
    assert "<td>q?x#y</td>" in listed
    assert 'id="oldest">q?x#y' in operator.get(CONSOLE).text.replace("\n", "")
    for tenant_id in odd:
        assert operator.get(f"{CONSOLE}/tenants/{quote(tenant_id, safe='')}").status_code == 404


def test_every_page_carries_a_strict_policy_and_no_secret(db, operator):
    insert(db, "acme", state="provisioned")
    for path in ("", "/tenants", "/tenants/acme", "/tenants/acme/delete", "/strays", "/sign-in"):
        response = operator.get(CONSOLE + path)
        assert response.status_code == 200, path
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy
        # One script allowed, the console's own, by its hash; connections to this origin only
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["script-src"] == f"'sha256-{sha256_b64(TIMELINE_JS)}'"
        assert directives["connect-src"] == "'self'"
        assert "unsafe-inline" not in policy
        assert "frame-ancestors 'none'" in policy
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
        assert OPERATOR_TOKEN not in response.text
        assert INFLUX_TOKEN not in response.text
        scripts = re.findall(r"<script>(.*?)</script>", response.text, re.S)
        assert scripts in ([], [TIMELINE_JS]), path
        assert response.text.count("<script") == len(scripts)


def test_the_overview_counts_every_state(db, operator):
    for i, state in enumerate(["failed", "failed", "provisioned", "retrying", "pending"]):
        insert(db, f"t{i}", state=state)
    page = operator.get(CONSOLE).text
    counts = dict(re.findall(r'<tr data-state="(\w+)">.*?data-count="(\d+)"', page, re.S))
    assert counts["failed"] == "2"
    assert counts["provisioned"] == "1"
    assert counts["waiting_for_capacity"] == "0"
    assert re.search(r'id="total">5<', page)


def test_tenants_are_paged_by_keyset_newest_change_first(db, operator):
    # Given 2.5 pages of tenants, changed one second apart, two of them at the same moment
    total = PAGE_SIZE * 2 + PAGE_SIZE // 2
    for i in range(total):
        insert(db, f"k{i:04d}", state="failed" if i % 3 == 0 else "provisioned")
        db.execute(
            "UPDATE tenants SET influxdb_updated_at = %s WHERE tenant_id = %s",
            (T0 + timedelta(seconds=i if i != 7 else 6), f"k{i:04d}"),
        )
    # When the operator follows "Older" to the end
    seen = walk(operator, f"{CONSOLE}/tenants")
    # Then every tenant shows exactly once, newest change first, ties by id
    expected = sorted(
        (f"k{i:04d}" for i in range(total)),
        key=lambda t: (int(t[1:]) if t != "k0007" else 6, t),
        reverse=True,
    )
    assert seen == expected
    # And with a filter, only that state, still complete
    failed = walk(operator, f"{CONSOLE}/tenants?state=failed")
    assert failed == [t for t in expected if int(t[1:]) % 3 == 0]
    assert walk(operator, f"{CONSOLE}/tenants?q=k00") == [t for t in expected if t < "k0100"]


def walk(client: TestClient, url: str) -> list[str]:
    seen: list[str] = []
    while url:
        page = client.get(url)
        assert page.status_code == 200, page.text
        ids = re.findall(r'<tr data-tenant="([^"]+)">', page.text)
        assert len(ids) <= PAGE_SIZE
        seen.extend(ids)
        older = re.search(r'href="([^"]+)" id="older"', page.text)
        url = older.group(1).replace("&amp;", "&") if older else ""
    return seen


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("state=bogus", "state must be one of"),
        ("q=a%25b", "may contain only"),
        ("after=not-a-cursor", "page cursor is not valid"),
        ("after=" + "QUJD", "page cursor is not valid"),
    ],
)
def test_a_bad_filter_or_cursor_is_a_clear_422(operator, query, message):
    response = operator.get(f"{CONSOLE}/tenants?{query}")
    assert response.status_code == 422
    assert message in response.text
    assert "No tenant matches" in response.text


def test_an_unknown_or_malformed_tenant_is_a_404_page(operator):
    assert operator.get(f"{CONSOLE}/tenants/nobody").status_code == 404
    response = operator.get(f"{CONSOLE}/tenants/bad%20id")
    assert response.status_code == 404
    assert "may contain only" in response.text


def test_the_strays_page_lists_what_the_reconciler_recorded_as_text(db, operator):
    # Given no stray yet, the page says so, and every page links to it
    page = operator.get(f"{CONSOLE}/strays")
    assert page.status_code == 200
    assert "None: every database the servers listed" in page.text
    assert f'href="{CONSOLE}/strays"' in operator.get(CONSOLE).text
    # Given a stray of acme on beta, and an orphan whose name came from a hostile server
    insert(db, "acme", state="provisioned", node="alpha")
    db.execute(
        "INSERT INTO influxdb_strays VALUES "
        "('beta', 'telemetry_acme', 'stray', 'acme', 'alpha', %(t)s, %(t)s), "
        "('beta', %(name)s, 'orphan', NULL, NULL, %(t)s, %(t)s)",
        {"t": T0, "name": HOSTILE_NAME},
    )
    # Then both are rows, the stray linked to its tenant, the hostile name only text
    body = operator.get(f"{CONSOLE}/strays").text
    rows = re.findall(r'<tr data-node="beta" data-database="([^"]+)" data-kind="(\w+)">', body)
    assert rows == [("&lt;img src=x onerror=alert(1)&gt;", "orphan"), ("telemetry_acme", "stray")]
    assert f'href="{CONSOLE}/tenants/acme"' in body
    assert "<img" not in body


BIG = 10 * 1024 * 1024


@pytest.mark.parametrize(
    "path",
    ["/sign-in", "/sign-out", "/tenants/acme/retry", "/tenants/acme/delete"],
)
def test_a_10_mb_form_is_refused_before_it_is_parsed(anonymous, path):
    # Without a session: the body is refused before the sign-in check, form parsing or a route
    upload = anonymous.post(CONSOLE + path, files={"f": ("f.bin", b"x" * BIG)})
    assert upload.status_code == 413, upload.text
    form = anonymous.post(CONSOLE + path, data={"token": "t" * BIG})
    assert form.status_code == 413

    # And a body that does not say its length is refused once it passes the limit
    def chunks() -> Iterator[bytes]:
        for _ in range(BIG // 65536):
            yield b"token=" + b"t" * 65530

    streamed = anonymous.post(
        CONSOLE + path,
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert streamed.status_code == 413


def test_a_bidi_override_in_a_name_is_shown_not_obeyed(db, operator):
    insert(db, "spoof", state="failed", error_reason="rejected", last_error="a\u202eb\x1bc")
    db.execute("UPDATE tenants SET name = %s WHERE tenant_id = 'spoof'", ("gnp\u202eexe",))
    for path in ("/tenants", "/tenants/spoof"):
        body = operator.get(CONSOLE + path).text
        assert "\u202e" not in body and "\x1b" not in body, path
    assert "gnp\\u202eexe" in operator.get(f"{CONSOLE}/tenants/spoof").text


def test_the_public_form_token_says_nothing_about_the_operator_token(anonymous, db):
    # Given the sign-in page anyone can fetch: a nonce cookie and the form's token
    page = anonymous.get(f"{CONSOLE}/sign-in")
    nonce, token = anonymous.cookies[CSRF_COOKIE], form_token(page.text)

    # Then guessing the operator token cannot be checked against them offline: the key is the
    # deployment's random secret, not one derived from the token (as it was)
    from_the_token = hashlib.sha256(b"console csrf: " + OPERATOR_TOKEN.encode()).digest()
    assert CsrfGuard(from_the_token)._key != CsrfGuard(deployment_secret("console"))._key
    assert token == CsrfGuard(deployment_secret("console"))._mac_of(nonce)

    # And every process of the deployment agrees: another app accepts this browser's form
    with TestClient(create_app(), follow_redirects=False, cookies={CSRF_COOKIE: nonce}) as other:
        fields = {"token": OPERATOR_TOKEN, "csrf_token": token, "next": CONSOLE}
        assert other.post(f"{CONSOLE}/sign-in", data=fields).status_code == 303


def test_the_overview_says_which_server_does_not_answer(db, operator):
    # Given the pool's one server marked: its listing was refused for our token
    db.execute(
        "INSERT INTO influxdb_nodes (name, unavailable_since, unavailable_reason) "
        "VALUES ('default', %s, 'unauthorized')",
        (T0,),
    )

    row = re.search(r'<tr data-node="default">.*?</tr>', operator.get(CONSOLE).text, re.S)

    assert row is not None
    assert "not answering (unauthorized)" in row.group(0)


def test_the_overview_says_when_a_server_named_a_lower_limit_than_the_nodes_file(db, operator):
    # Given the pool's one server (limit 5 in the settings), which refused at 2 databases
    db.execute(
        "INSERT INTO influxdb_nodes (name, full_since, refused_limit) VALUES ('default', %s, 2)",
        (T0,),
    )

    row = re.search(r'<tr data-node="default">.*?</tr>', operator.get(CONSOLE).text, re.S)

    assert row is not None
    assert "the server says 2" in row.group(0)
    assert "■ full" in row.group(0)


def test_tenantctl_list_says_when_it_stopped_at_its_limit(db, capsys):
    insert(db, "acme")
    insert(db, "beta")
    assert cli_main(["list", "--limit", "1"]) == 0
    out, err = capsys.readouterr()
    assert "acme" in out and "beta" not in out
    assert "CREATED_AT" in out.splitlines()[0]  # the age the unprovisioned alert counts
    assert "there may be more: --limit N" in err
    assert cli_main(["list", "--limit", "5"]) == 0
    assert "there may be more" not in capsys.readouterr().err
