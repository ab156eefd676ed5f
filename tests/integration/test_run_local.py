"""The README's first command, ``bash scripts/run-local``, as an operator runs it: the whole job
comes up, provisions a tenant, says where everything is without printing a secret, and stops
every process it started on Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from harness import databases
from harness.processes import free_port
from tests.conftest import ROOT, wait_for


@pytest.fixture
def run_local_database() -> Iterator[str]:
    """A database name run-local creates itself (it does when missing); dropped after."""
    name = f"tp_runlocal_{secrets.token_hex(4)}"
    yield name
    databases.drop(name)


def test_run_local_with_tokens_given_as_values(
    run_local_database: str, own_redis: dict[str, Any], tmp_path: Path
) -> None:
    # Given the operator's tokens set as values (not files), Flower's login and the database's
    # URL in files (the database not there yet, on a server named otherwise than run-local's
    # default), and free ports
    operator_token, locations_token = secrets.token_hex(20), secrets.token_hex(20)
    flower_login = ("ops", secrets.token_hex(12))
    flower_file = tmp_path / "flower_auth"
    flower_file.write_text(":".join(flower_login))
    api_port, flower_port, standin_port = free_port(), free_port(), free_port()
    database_file = tmp_path / "database_url"
    database_file.write_text(f"postgresql://postgres@localhost:5432/{run_local_database}\n")
    # and the pool in a nodes file: the stand-in run-local starts, with the token it generates
    nodes_file = tmp_path / "nodes.json"
    nodes_file.write_text(
        f'[{{"name": "local", "url": "http://127.0.0.1:{standin_port}", '
        f'"token_file": "{tmp_path / "run" / "influxdb_token"}"}}]'
    )
    env = _inherited() | {
        "DATABASE_URL_FILE": str(database_file),
        "INFLUXDB_NODES_FILE": str(nodes_file),
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{own_redis['port']}/0",
        "OPERATOR_TOKEN": operator_token,
        "LOCATIONS_TOKEN": locations_token,
        "FLOWER_BASIC_AUTH_FILE": str(flower_file),
        "API_PORT": str(api_port),
        "FLOWER_PORT": str(flower_port),
        "STANDIN_PORT": str(standin_port),
        "RUN_DIR": str(tmp_path / "run"),
        "WORKER_CONCURRENCY": "2",
        "LIVE_CHECK_TIMEOUT": "3",
    }
    log_path = tmp_path / "run-local.log"
    job = _start(env, log_path)
    api = f"http://127.0.0.1:{api_port}"
    auth = {"Authorization": f"Bearer {operator_token}"}
    try:
        # When it is up and a tenant is created
        _wait_started(job, log_path)
        wait_for(lambda: _answers(f"{api}/healthz"), 60, 0.2, "the operator API")
        created = requests.post(
            f"{api}/operator/tenants", json={"tenant_id": "acme", "name": "Acme"}, headers=auth
        )
        assert created.status_code == 201, created.text

        # Then the tenant is provisioned on the stand-in it started, and Flower asks for a login
        def state() -> str:
            return str(requests.get(f"{api}/operator/tenants/acme/stats", headers=auth).json())

        wait_for(lambda: "'provisioned'" in state(), 60, 0.2, "acme provisioned")
        flower = f"http://127.0.0.1:{flower_port}/"
        wait_for(lambda: _answers(flower, expect=401), 30, 0.2, "Flower asking for a login")
        assert requests.get(flower, auth=flower_login, timeout=5).status_code == 200

        # And it says where the tokens are without printing them
        printed = log_path.read_text()
        assert f"==> creating database {run_local_database}" in printed
        assert f"DATABASE_URL_FILE={database_file}" in printed
        assert f"INFLUXDB_NODES_FILE={nodes_file}" in printed
        assert "operator token: $OPERATOR_TOKEN (as you set it)" in printed
        assert "(token: $LOCATIONS_TOKEN (as you set it))" in printed
        assert f"Flower login: {flower_file}" in printed
        assert f"INFLUXDB_URL=http://127.0.0.1:{standin_port}" in printed
        # every setting tenantctl must share, and the names of those it does not print
        assert "LIVE_CHECK_TIMEOUT=3" in printed
        assert "(secrets, not printed): LOCATIONS_TOKEN, OPERATOR_TOKEN\n" in printed
        for secret in (operator_token, locations_token, flower_login[1]):
            assert secret not in printed
    finally:
        # When the operator presses Ctrl-C
        exited, stopped = _interrupt(job)
    # Then it exits, and every process it started has stopped
    assert exited and stopped, log_path.read_text()[-3000:]


def test_ctrl_c_kills_what_does_not_stop_in_time(
    run_local_database: str, own_redis: dict[str, Any], tmp_path: Path
) -> None:
    # Given run-local up, with no time given for a warm shutdown (STOP_TIMEOUT=0), and a
    # database password a URL parser would not see (it begins with '#'; trust auth ignores it)
    password = "#pw-" + secrets.token_hex(6)
    env = _inherited() | {
        "DATABASE_URL": (
            f"postgresql+psycopg://postgres:{password}@127.0.0.1:5432/{run_local_database}"
        ),
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{own_redis['port']}/0",
        "API_PORT": str(free_port()),
        "FLOWER_PORT": str(free_port()),
        "STANDIN_PORT": str(free_port()),
        "RUN_DIR": str(tmp_path / "run"),
        "WORKER_CONCURRENCY": "2",
        "STOP_TIMEOUT": "0",
    }
    log_path = tmp_path / "run-local.log"
    job = _start(env, log_path)
    try:
        _wait_started(job, log_path)
    finally:
        # When the operator presses Ctrl-C
        exited, stopped = _interrupt(job)
    # Then it does not wait: it names what it kills, and every process it started is gone,
    # the worker's pool children with it
    printed = log_path.read_text()
    assert exited and stopped, printed[-3000:]
    assert "==> the worker (pid " in printed, printed[-3000:]
    assert "did not stop within 0 s; killing it" in printed
    # And the password was named for the second shell, never printed
    assert "(secrets, not printed): DATABASE_URL" in printed
    assert password not in printed


def test_a_process_that_cannot_start_is_named_and_nothing_claims_to_be_up(
    run_local_database: str, own_redis: dict[str, Any], tmp_path: Path
) -> None:
    # Given the API's port taken by another program
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(8)
        env = _inherited() | {
            "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{run_local_database}",
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{own_redis['port']}/0",
            "API_PORT": str(squatter.getsockname()[1]),
            "FLOWER_PORT": str(free_port()),
            "STANDIN_PORT": str(free_port()),
            "RUN_DIR": str(tmp_path / "run"),
            "WORKER_CONCURRENCY": "2",
        }
        log_path = tmp_path / "run-local.log"
        job = _start(env, log_path)
        try:
            job.wait(timeout=180)
        finally:
            exited, stopped = _interrupt(job)
    # Then it says which process died and how, stops the rest, and never printed the banner
    printed = log_path.read_text()
    assert exited and stopped, printed[-3000:]
    assert job.returncode == 1, printed[-3000:]
    assert re.search(r"==> the operator API \(pid \d+\) exited with status \d+ before", printed)
    assert "==> operator console:" not in printed
    assert "tenantctl in another shell" not in printed


def test_a_stop_timeout_that_is_not_a_number_stops_it_before_anything_starts(
    run_local_database: str, tmp_path: Path
) -> None:
    # Given a STOP_TIMEOUT with a unit
    env = _inherited() | {
        "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{run_local_database}",
        "RUN_DIR": str(tmp_path / "run"),
        "STOP_TIMEOUT": "30s",
    }
    # When run-local starts
    command = ["bash", "scripts/run-local"]
    done = subprocess.run(
        command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    # Then it says what is wrong and stops, having started and created nothing
    assert done.returncode == 2, done.stdout + done.stderr
    assert "STOP_TIMEOUT must be a whole number of seconds (got '30s')" in done.stderr
    with psycopg.connect(databases.ADMIN_DSN) as admin:
        found = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (run_local_database,))
        assert found.fetchone() is None


def _inherited() -> dict[str, str]:
    """This environment without any of the job's own settings."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CELERY_", "INFLUXDB_", "FLOWER_", "PROVISION_", "RECONCILE_"))
        and not k.endswith(("_TOKEN", "_TOKEN_FILE"))
        and not k.startswith("DATABASE_URL")
    }


# As from a terminal: Ctrl-C's SIGINT at its default disposition. A shell ignores SIGINT in the
# jobs it starts in the background, and a process inherits that; bash cannot trap a signal it was
# started ignoring, so under a backgrounded test run the script would never see the Ctrl-C.
AS_FROM_A_TERMINAL = (
    "import os, signal; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvp('bash', ['bash', 'scripts/run-local'])"
)


def _start(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-c", AS_FROM_A_TERMINAL],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_started(job: subprocess.Popen[bytes], log_path: Path) -> None:
    def started() -> bool:
        assert job.poll() is None, f"run-local exited:\n{log_path.read_text()[-3000:]}"
        return "tenantctl in another shell" in log_path.read_text()

    wait_for(started, 120, 0.5, "run-local's processes")


def _interrupt(job: subprocess.Popen[bytes]) -> tuple[bool, bool]:
    """Ctrl-C to the script's own process: whether it exited within a minute, and whether its
    whole group is gone. Whatever is left is killed and the script reaped, so that nothing
    outlives the test."""
    job.send_signal(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        job.wait(timeout=60)
    exited = job.returncode is not None
    stopped = _group_gone(job.pid)
    if not stopped:
        os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    return exited, stopped


def _answers(url: str, expect: int = 200) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == expect
    except requests.RequestException:
        return False


def _group_gone(pgid: int) -> bool:
    """Whether no process of the group is left (waiting a little for the last ones)."""
    try:
        wait_for(lambda: not _group_alive(pgid), 30, 0.2, "run-local's processes to stop")
    except pytest.fail.Exception:
        return False
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
