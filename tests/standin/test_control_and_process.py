"""The /_standin/* control endpoints, and the stand-in run as its own process."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import requests

from influxdb3_standin import StandIn
from tests.standin.conftest import TOKEN

ROOT = Path(__file__).resolve().parents[2]  # the repository, where `python -m` finds the package


# ---- control endpoints (for a stand-in running as a separate process) -------------------------


def test_control_endpoints_need_no_auth_and_switch_faults(
    standin: StandIn, client: requests.Session
) -> None:
    state = requests.get(f"{standin.url}/_standin/state", timeout=5)
    assert state.status_code == 200
    assert TOKEN not in state.text
    assert state.json()["database_limit"] == 5

    switched = requests.post(
        f"{standin.url}/_standin/switches", json={"error_rate": 1.0, "database_limit": 3}, timeout=5
    )
    assert switched.status_code == 200
    assert switched.json()["switches"]["error_rate"] == 1.0
    assert client.get(f"{standin.url}/health", timeout=5).status_code in (500, 503)

    requests.post(f"{standin.url}/_standin/switches", json={"error_rate": 0}, timeout=5)
    assert client.get(f"{standin.url}/health", timeout=5).status_code == 200

    unknown = requests.post(f"{standin.url}/_standin/switches", json={"bogus": 1}, timeout=5)
    assert unknown.status_code == 400


def test_timed_outage_ends_by_itself(standin: StandIn) -> None:
    response = requests.post(
        f"{standin.url}/_standin/switches", json={"outage_seconds": 0.5}, timeout=5
    )
    assert response.status_code == 200

    deadline = time.monotonic() + 1
    refused = False
    while time.monotonic() < deadline and not refused:
        try:
            requests.get(f"{standin.url}/_standin/state", timeout=1)
            time.sleep(0.02)
        except requests.ConnectionError:
            refused = True
    assert refused

    deadline = time.monotonic() + 5
    while True:
        try:
            assert requests.get(f"{standin.url}/_standin/state", timeout=1).status_code == 200
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "the stand-in did not come back"
            time.sleep(0.05)


# ---- as a process -----------------------------------------------------------------------------


def test_runs_as_a_process_and_never_prints_the_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with subprocess.Popen(
        [sys.executable, "-m", "influxdb3_standin", "--port", "0", "--token-file", str(token_file)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            first_line = process.stdout.readline()
            match = re.fullmatch(r"influxdb3-standin listening on (http://\S+)\n", first_line)
            assert match, first_line
            url = match.group(1)

            headers = {"Authorization": f"Token {TOKEN}"}
            assert requests.get(f"{url}/health", headers=headers, timeout=5).text == "OK"
            assert requests.get(f"{url}/health", timeout=5).status_code == 401
        finally:
            process.terminate()
            stdout, stderr = process.communicate(timeout=10)

    assert process.returncode == 0
    assert "GET /health" in stderr
    assert TOKEN not in stdout + stderr + first_line
