"""The operator CLI is installed as ``tenantctl`` (and stays ``python -m worker``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from api_hooks.__main__ import OPENAPI_FILE
from tests.conftest import ROOT

REGENERATE = "python -m api_hooks --openapi"

TENANTCTL = Path(sys.executable).parent / "tenantctl"


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), cwd=ROOT, capture_output=True, text=True, timeout=60, check=False, env=env
    )


def test_tenantctl_and_python_m_worker_are_the_same_cli(db):
    db.execute("INSERT INTO tenants (tenant_id, name) VALUES ('acme', 'Acme')")
    for argv in ([str(TENANTCTL)], [sys.executable, "-m", "worker"]):
        listed = run(*argv, "--json", "list")
        assert listed.returncode == 0, listed.stderr
        assert [t["tenant_id"] for t in json.loads(listed.stdout)] == ["acme"]
    usage = run(str(TENANTCTL), "--help").stdout
    assert usage.startswith("usage: tenantctl ")
    assert run(str(TENANTCTL), "status", "nobody").returncode == 3


TERMINAL_ATTACK = "evil\x1b]0;owned\x07\x1b[2J\u202egnp.exe"


def test_names_reach_the_terminal_escaped(db):
    # Given a tenant the UI inserted itself (no validation of ours), its name and error hostile
    db.execute(
        "INSERT INTO tenants (tenant_id, name, influxdb_state, influxdb_last_error) "
        "VALUES ('acme', %s, 'failed', %s)",
        (TERMINAL_ATTACK, TERMINAL_ATTACK),
    )

    # When an operator lists it and asks for its status
    for argv in (("list",), ("status", "acme", "--no-live")):
        shown = run(str(TENANTCTL), *argv)

        # Then no escape sequence or bidi override reaches the terminal; each is visible
        assert shown.returncode == 0, shown.stderr
        assert "\x1b" not in shown.stdout and "\u202e" not in shown.stdout, argv
        assert "\\u001b" in shown.stdout or argv[0] == "list", argv
    assert "\\u202e" in run(str(TENANTCTL), "status", "acme", "--no-live").stdout


def test_flower_takes_its_credentials_from_a_file_or_refuses_to_start(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    # Neither variable: refused, nothing started
    refused = run(str(TENANTCTL), "flower", env=env)
    assert refused.returncode == 2
    assert "FLOWER_BASIC_AUTH_FILE" in refused.stderr
    # A file that cannot be read: refused, naming it
    missing = {**env, "FLOWER_BASIC_AUTH_FILE": str(tmp_path / "absent")}
    unread = run(str(TENANTCTL), "flower", env=missing)
    assert unread.returncode == 2
    assert f"FLOWER_BASIC_AUTH_FILE: cannot read {tmp_path / 'absent'}" in unread.stderr


def test_the_regeneration_command_writes_the_document_without_any_settings():
    # Only PATH: no OPERATOR_TOKEN, no DATABASE_URL - describing the API needs neither.
    only_path = {"PATH": os.environ.get("PATH", "")}
    written = run(sys.executable, "-m", "api_hooks", "--openapi", "-", env=only_path)
    assert written.returncode == 0, written.stderr
    assert written.stdout == OPENAPI_FILE.read_text(encoding="utf-8"), (
        f"docs/openapi.json is not what `{REGENERATE}` writes: run it and commit the file"
    )


def test_an_unreachable_database_is_one_line_and_its_own_exit_code(tmp_path):
    # Given a DATABASE_URL with a password, on a port where nothing listens
    env = {**os.environ, "DATABASE_URL": "postgresql://ops:s3cret-pw@127.0.0.1:1/nowhere"}

    # When an operator lists tenants
    shown = run(str(TENANTCTL), "list", env=env)

    # Then one line names the database as the problem: no traceback, no password
    assert shown.returncode == 5, shown.stderr
    assert shown.stderr.startswith("error: the database (DATABASE_URL) cannot be used: ")
    assert len(shown.stderr.strip().splitlines()) == 1, shown.stderr
    assert "Traceback" not in shown.stderr and "s3cret-pw" not in shown.stderr


def test_a_reader_that_goes_away_ends_the_output_quietly(db):
    # Given more tenants than a reader wants
    db.execute(
        "INSERT INTO tenants (tenant_id, name) SELECT 't' || i, 'n' FROM generate_series(1, 50) i"
    )

    # When the reader stops reading before the listing is written (`tenantctl list | head`)
    listing = subprocess.Popen(
        [str(TENANTCTL), "list"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert listing.stdout is not None and listing.stderr is not None
    listing.stdout.close()
    with listing.stderr:
        errors = listing.stderr.read().decode()
    code = listing.wait(timeout=60)

    # Then it stops as a Unix tool does: the SIGPIPE exit code, nothing on stderr
    assert (code, errors) == (141, "")
